/**
 * Finding a CRIU that can work here: `SPOTWATCH_CRIU` (an explicit path, never second-guessed), then the
 * project's private install `.criu/bin/criu` (scripts/install-criu.sh) in the repo, then `criu` on PATH. Each
 * candidate must run and report version 4 or newer (Debian bookworm's 3.17 fails on current kernels).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findAbove, findOnPath } from '../../util/find-executable.js';

export const MIN_CRIU_MAJOR = 4;

export interface CriuBinary {
  /** Executable to run (a wrapper script for the private install). */
  path: string;
  /** `4.1.1` */
  version: string;
  major: number;
  minor: number;
  source: 'env' | 'repo' | 'path';
  /**
   * How to start it without the private install's wrapper script: its loader, with the prefix's libraries (from
   * `.criu/exec.json`, written by scripts/install-criu.sh). Absent: run `path`.
   */
  exec?: { file: string; args: string[] };
}

/** The command line that runs `criu ARGS…` (skipping the private install's shell wrapper where it can). */
export function criuCommand(criu: Pick<CriuBinary, 'path' | 'exec'>, args: readonly string[]): { file: string; args: string[] } {
  return criu.exec ? { file: criu.exec.file, args: [...criu.exec.args, ...args] } : { file: criu.path, args: [...args] };
}

/** The direct command of a private install (`PREFIX/bin/criu` with `PREFIX/exec.json` beside it), if it has one. */
export function privateInstallExec(wrapper: string): CriuBinary['exec'] {
  try {
    const prefix = dirname(dirname(realpathSync(wrapper)));
    const spec = JSON.parse(readFileSync(join(prefix, 'exec.json'), 'utf8')) as { loader?: unknown; libraryPath?: unknown; criu?: unknown };
    if (typeof spec.loader !== 'string' || typeof spec.criu !== 'string' || !Array.isArray(spec.libraryPath)) return undefined;
    const file = join(prefix, spec.loader);
    const binary = join(prefix, spec.criu);
    if (!existsSync(file) || !existsSync(binary)) return undefined;
    return { file, args: ['--library-path', spec.libraryPath.map((p) => join(prefix, String(p))).join(':'), binary] };
  } catch {
    return undefined;
  }
}

export type CriuLocation = { ok: true; binary: CriuBinary } | { ok: false; reason: string };

/** Parses `criu --version` output (`Version: 4.1.1`, possibly followed by `GitID: …`). */
export function parseCriuVersion(output: string): { version: string; major: number; minor: number } | undefined {
  const m = /^Version:\s*(\d+)\.(\d+)(?:\.(\d+))?/m.exec(output);
  if (!m) return undefined;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return { version: m[3] === undefined ? `${major}.${minor}` : `${major}.${minor}.${m[3]}`, major, minor };
}

function runVersion(path: string): Promise<string> {
  return new Promise((res, rej) => {
    execFile(path, ['--version'], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${path} --version failed: ${(stderr || err.message).trim()}`, { cause: err }));
      else res(stdout);
    });
  });
}


/** `.criu/bin/criu` in the nearest directory above `from` (and above the cwd) that has one. */
export async function findRepoCriu(from: string = dirname(fileURLToPath(import.meta.url))): Promise<string | undefined> {
  return findAbove(from, [['.criu', 'bin', 'criu']]);
}


async function check(path: string, source: CriuBinary['source']): Promise<CriuLocation> {
  let out: string;
  try {
    out = await runVersion(path);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  const v = parseCriuVersion(out);
  if (!v) return { ok: false, reason: `${path} --version printed no version: ${out.trim().slice(0, 200)}` };
  if (v.major < MIN_CRIU_MAJOR) {
    return { ok: false, reason: `${path} is CRIU ${v.version}; ${MIN_CRIU_MAJOR}.x or newer is needed` };
  }
  const exec = source === 'path' ? undefined : privateInstallExec(path);
  return { ok: true, binary: { path, ...v, source, ...(exec ? { exec } : {}) } };
}

/**
 * Locates a usable CRIU. `explicit` (or `SPOTWATCH_CRIU`) is the only candidate when set; otherwise the repo's
 * `.criu/bin/criu`, then `criu` on PATH. The failure reason lists every candidate tried and says how to get one.
 */
export async function locateCriu(explicit: string | undefined = process.env.SPOTWATCH_CRIU): Promise<CriuLocation> {
  if (explicit) return check(explicit, 'env');
  const tried: string[] = [];
  const repo = await findRepoCriu();
  if (repo) {
    const r = await check(repo, 'repo');
    if (r.ok) return r;
    tried.push(r.reason);
  }
  const onPath = await findOnPath('criu');
  if (onPath) {
    const r = await check(onPath, 'path');
    if (r.ok) return r;
    tried.push(r.reason);
  }
  return {
    ok: false,
    reason:
      `no usable CRIU ${MIN_CRIU_MAJOR}.x found (${tried.length ? tried.join('; ') : 'no .criu/bin/criu, no criu on PATH'}); ` +
      'run scripts/install-criu.sh as root, or set SPOTWATCH_CRIU to a criu binary',
  };
}
