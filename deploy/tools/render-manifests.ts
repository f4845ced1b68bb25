/**
 * Renders the plain manifests (deploy/kubernetes/*.yaml) from the Helm chart with deploy/helm/plain-manifests.values.yaml:
 *
 *   npx tsx deploy/tools/render-manifests.ts          # write them
 *   npx tsx deploy/tools/render-manifests.ts --check  # exit 1 if the committed ones differ
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MANIFESTS_DIR, renderManifests } from './helm.js';

const check = process.argv.includes('--check');
const want = await renderManifests();
const have = new Map(
  readdirSync(MANIFESTS_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => [f, readFileSync(join(MANIFESTS_DIR, f), 'utf8')]),
);
const stale = [...want].filter(([f, body]) => have.get(f) !== body).map(([f]) => f);
const extra = [...have.keys()].filter((f) => !want.has(f));
if (check) {
  if (stale.length || extra.length) {
    console.error(`deploy/kubernetes is out of date: ${[...stale, ...extra.map((f) => `${f} (not rendered)`)].join(', ')}`);
    process.exit(1);
  }
  console.log(`deploy/kubernetes matches the chart (${want.size} files)`);
} else {
  for (const f of extra) rmSync(join(MANIFESTS_DIR, f));
  for (const [f, body] of want) writeFileSync(join(MANIFESTS_DIR, f), body);
  console.log(`wrote ${want.size} files to deploy/kubernetes${extra.length ? `, removed ${extra.join(', ')}` : ''}`);
}
