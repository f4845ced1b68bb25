/**
 * A real Helm binary, without a download at test time: the npm package `@aws-cdk/asset-kubectl-v20` (a
 * devDependency) ships the official linux-amd64 `helm` (v3.8.1) inside its `layer.zip`. It is unpacked once
 * into node_modules/.cache/spotwatch-helm/ and run from there. Only x86_64 Linux; elsewhere `findHelm`
 * says why it has none.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CHART_DIR = join(REPO_ROOT, 'deploy/helm/spotwatch');
export const MANIFESTS_DIR = join(REPO_ROOT, 'deploy/kubernetes');
/** Values the committed plain manifests are rendered with. */
export const MANIFEST_VALUES = join(REPO_ROOT, 'deploy/helm/plain-manifests.values.yaml');
export const RELEASE = 'spotwatch';
export const NAMESPACE = 'spotwatch';

const HELM_PACKAGE = '@aws-cdk/asset-kubectl-v20';
const HELM_ENTRY = 'helm/helm';

/** Reads one stored or deflated entry of a zip file (central directory, then the local header). */
export function readZipEntry(zip: Buffer, name: string): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error('not a zip file (no end of central directory)');
  const entries = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error('corrupt zip central directory');
    const method = zip.readUInt16LE(p + 10);
    const compressed = zip.readUInt32LE(p + 20);
    const size = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const local = zip.readUInt32LE(p + 42);
    const entryName = zip.toString('utf8', p + 46, p + 46 + nameLen);
    if (entryName === name) {
      const dataStart = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
      const data = zip.subarray(dataStart, dataStart + compressed);
      const out = method === 0 ? Buffer.from(data) : method === 8 ? inflateRawSync(data) : undefined;
      if (!out) throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
      if (out.length !== size) throw new Error(`zip entry ${name}: ${out.length} bytes, expected ${size}`);
      return out;
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  throw new Error(`zip has no entry ${name}`);
}

export type HelmLocation = { ok: true; path: string; version: string } | { ok: false; reason: string };

let cached: HelmLocation | undefined;

/** `SPOTWATCH_HELM` (an explicit binary), else the helm of the npm package, unpacked once. */
export function findHelm(): HelmLocation {
  if (cached) return cached;
  const explicit = process.env.SPOTWATCH_HELM;
  if (explicit) return (cached = { ok: true, path: explicit, version: 'explicit' });
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return (cached = { ok: false, reason: `the npm-packaged helm is linux-amd64 only (this is ${process.platform}-${process.arch}); set SPOTWATCH_HELM` });
  }
  let pkgDir: string;
  try {
    pkgDir = dirname(createRequire(join(REPO_ROOT, 'package.json')).resolve(`${HELM_PACKAGE}/package.json`));
  } catch {
    return (cached = { ok: false, reason: `${HELM_PACKAGE} is not installed (npm ci installs it: it is a devDependency)` });
  }
  const version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  const dir = join(REPO_ROOT, 'node_modules/.cache/spotwatch-helm', version);
  const bin = join(dir, 'helm');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    writeFileSync(tmp, readZipEntry(readFileSync(join(pkgDir, 'lib/layer.zip')), HELM_ENTRY));
    chmodSync(tmp, 0o755);
    renameSync(tmp, bin); // atomic: parallel test workers never run a half-written binary
  }
  return (cached = { ok: true, path: bin, version });
}

export function runHelm(args: string[], options: { input?: string } = {}): Promise<string> {
  const helm = findHelm();
  if (!helm.ok) return Promise.reject(new Error(helm.reason));
  return new Promise((res, rej) => {
    const child = execFile(
      helm.path,
      args,
      {
        maxBuffer: 32 * 1024 * 1024,
        timeout: 60_000,
        // Helm must never reach a cluster or a repository here, nor read the developer's config.
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(REPO_ROOT, 'node_modules/.cache/spotwatch-helm'), HELM_CACHE_HOME: '/nonexistent', KUBECONFIG: '/dev/null' },
      },
      (err, stdout, stderr) => {
        if (err) rej(new Error(`helm ${args.join(' ')} failed: ${stderr || err.message}`));
        else res(stdout);
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** The Kubernetes version charts are rendered for unless a test says otherwise (helm 3.8 would assume 1.23). */
export const KUBE_VERSION = '1.31.0';

/** `helm template` of the chart with values files and/or a values object (passed as a JSON values file). */
export async function helmTemplate(options: { valuesFiles?: string[]; values?: Record<string, unknown>; kubeVersion?: string } = {}): Promise<string> {
  const args = ['template', RELEASE, CHART_DIR, '--namespace', NAMESPACE, '--kube-version', options.kubeVersion ?? KUBE_VERSION];
  for (const f of options.valuesFiles ?? []) args.push('-f', f);
  let dir: string | undefined;
  if (options.values) {
    dir = mkdtempSync(join(tmpdir(), 'spotwatch-values-'));
    writeFileSync(join(dir, 'values.json'), JSON.stringify(options.values));
    args.push('-f', join(dir, 'values.json'));
  }
  try {
    return await runHelm(args);
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Splits `helm template` output into one document list per template (`# Source: spotwatch/templates/x.yaml`),
 * as the plain manifests are laid out: deploy/kubernetes/x.yaml.
 */
export function splitBySource(rendered: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const doc of rendered.split(/^---\s*$/m)) {
    const m = /^# Source: [^/]+\/templates\/(.+)$/m.exec(doc);
    if (!m || doc.trim() === '') continue;
    const file = m[1]!.replace(/\//g, '-');
    const body = doc.replace(/^\s*\n/, '').replace(/\s+$/, '\n');
    files.set(file, (files.has(file) ? `${files.get(file)}---\n` : '') + body);
  }
  return files;
}

export const MANIFEST_HEADER =
  '# Generated from deploy/helm/spotwatch by `npx tsx deploy/tools/render-manifests.ts` with\n' +
  '# deploy/helm/plain-manifests.values.yaml. Do not edit: change the chart or those values and render again\n' +
  '# (test/unit/deploy-manifests.test.ts fails when this file and the chart disagree).\n';

/**
 * The plain manifests as they should be on disk: file name → content, plus a kustomization.yaml listing them
 * (`kubectl apply -k deploy/kubernetes` applies the Namespace first).
 */
export async function renderManifests(): Promise<Map<string, string>> {
  const rendered = await helmTemplate({ valuesFiles: [MANIFEST_VALUES] });
  const out = new Map<string, string>();
  for (const [file, body] of splitBySource(rendered)) out.set(file, `${MANIFEST_HEADER}---\n${body}`);
  const resources = [...out.keys()].sort();
  out.set(
    'kustomization.yaml',
    `${MANIFEST_HEADER}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n${resources.map((r) => `  - ${r}`).join('\n')}\n`,
  );
  return out;
}
