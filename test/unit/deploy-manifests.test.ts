import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { findHelm, MANIFESTS_DIR, NAMESPACE, renderManifests } from '../../deploy/tools/helm.js';
import { validateObject } from '../../deploy/tools/k8s-schema.js';

/**
 * The plain manifests (deploy/kubernetes/*.yaml): every object valid against the Kubernetes schemas (strict:
 * no unknown field), and the files exactly what the chart renders (so they never drift apart).
 */

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const files = readdirSync(MANIFESTS_DIR).filter((f) => f.endsWith('.yaml'));
const objects = files
  .filter((f) => f !== 'kustomization.yaml')
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(MANIFESTS_DIR, f), 'utf8'))
      .map((d) => {
        if (d.errors.length) throw new Error(`${f}: ${d.errors.map((e) => e.message).join('; ')}`);
        return d.toJS() as Obj | null;
      })
      .filter((o): o is Obj => o !== null)
      .map((o) => ({ file: f, o })),
  );

describe('plain manifests', () => {
  it('are valid Kubernetes objects, with no unknown field', () => {
    expect(objects.length).toBeGreaterThanOrEqual(9);
    expect(objects.flatMap(({ file, o }) => validateObject(o).map((p) => `${file}: ${p.object}: ${p.problem}`))).toEqual([]);
  });

  it('hold the agent DaemonSet, its RBAC, the webhook and a Namespace, and no Secret', () => {
    const kinds = objects.map(({ o }) => o.kind).sort();
    expect(kinds).toEqual(['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'ServiceAccount']);
    for (const { o } of objects) {
      if (['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) expect(o.metadata.namespace).toBeUndefined();
      else if (o.kind === 'Role' || o.kind === 'RoleBinding') expect(o.metadata.namespace).toBe('default'); // events on nodes
      else expect(o.metadata.namespace).toBe(NAMESPACE);
    }
    const ns = objects.find(({ o }) => o.kind === 'Namespace')!.o;
    expect(ns.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

  it('kustomization.yaml lists every manifest', () => {
    const k = parseAllDocuments(readFileSync(join(MANIFESTS_DIR, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Obj;
    expect(k.kind).toBe('Kustomization');
    expect([...k.resources].sort()).toEqual(files.filter((f) => f !== 'kustomization.yaml').sort());
  });

  const helm = findHelm();
  it.skipIf(!helm.ok)('are what the chart renders (npx tsx deploy/tools/render-manifests.ts)', async () => {
    const want = await renderManifests();
    const have = new Map(files.map((f) => [f, readFileSync(join(MANIFESTS_DIR, f), 'utf8')]));
    expect([...have.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [f, body] of want) expect(have.get(f), `${f} is stale: run npx tsx deploy/tools/render-manifests.ts`).toBe(body);
  });
});
