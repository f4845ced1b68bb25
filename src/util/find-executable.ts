import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Finding the binaries spotwatch brings or relies on (CRIU in `.criu/`, the CUDA checkpoint helper in
 * `native/build/`): in the project's own directories first, then on PATH.
 */
export async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The first executable `join(dir, relative)` over the directories from `from` up to the root, then from the
 * cwd up (a repository checkout, a copied bundle, or an installed package all work).
 */
export async function findAbove(from: string, relatives: string[][]): Promise<string | undefined> {
  for (const start of [from, process.cwd()]) {
    let dir = resolve(start);
    for (;;) {
      for (const rel of relatives) {
        const candidate = join(dir, ...rel);
        if (await isExecutable(candidate)) return candidate;
      }
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  return undefined;
}

export async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/**
 * A binary the project builds (`native/build/NAME`, or `.spotwatch/bin/NAME` in a bundle), found above this
 * module or the cwd; `explicit` (a path from the environment) wins when it is executable.
 */
export async function findProjectExecutable(name: string, explicit?: string, from: string = dirname(fileURLToPath(import.meta.url))): Promise<string | undefined> {
  if (explicit) return (await isExecutable(explicit)) ? explicit : undefined;
  return findAbove(from, [['native', 'build', name], ['.spotwatch', 'bin', name]]);
}

/** Probe results per binary and expected line: a native program that cannot run here is found out once. */
const probed = new Map<string, Promise<boolean>>();

/**
 * Whether one of the project's native programs runs here: started with no arguments and no descriptors, it must
 * refuse with exit 2 and a usage line matching `usage` (another architecture or a broken copy fails this). Checked
 * before the program is trusted with a task's sockets or a CRIU command line.
 */
export function probeNativeUsage(binary: string, usage: string): Promise<boolean> {
  const key = `${binary}\0${usage}`;
  let p = probed.get(key);
  if (!p) {
    p = new Promise<boolean>((resolve) => {
      const child = spawn(binary, [], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.once('error', () => resolve(false));
      child.once('close', (code) => resolve(code === 2 && err.includes(usage)));
    });
    probed.set(key, p);
  }
  return p;
}
