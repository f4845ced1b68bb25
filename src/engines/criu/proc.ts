/**
 * Reading a live process tree from /proc: its members, their state, their session, and how big a checkpoint
 * of it will be. Linux only.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import type { SizeEstimate, TaskState } from '../checkpoint-engine.js';

/** Fixed metadata CRIU writes per image (inventory, pstree, files, …) and per thread (core, fpu state). */
const IMAGE_BASE_BYTES = 256 * 1024;
const IMAGE_PER_THREAD_BYTES = 16 * 1024;

export interface ProcStat {
  pid: number;
  /** Single-letter state: R, S, D, T, t, Z, X, I … */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Controlling terminal (0: none). */
  ttyNr: number;
  /** Kernel PF_* flags (field 9 of stat). */
  flags: number;
}

/** PF_EXITING: the process is on its way out (killed, its memory being torn down); its pid frees soon. */
const PF_EXITING = 0x4;

/** A pid that is still taken but will free itself: a zombie, or a process in the middle of exiting. */
export function isDying(stat: ProcStat | undefined): boolean {
  return stat !== undefined && (stat.state === 'Z' || stat.state === 'X' || (stat.flags & PF_EXITING) !== 0);
}

/** Parses /proc/PID/stat (the command name may contain spaces and parentheses). */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const f = text.slice(close + 2).trim().split(/\s+/);
  if (f.length < 5 || !Number.isInteger(pid)) return undefined;
  return { pid, state: f[0] ?? '?', ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), ttyNr: Number(f[4]), flags: Number(f[6] ?? 0) };
}

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  // /proc reads on the checkpoint's path (this, processTree) are synchronous: they never block on a disk, and they
  // run inside a task's downtime, where a thread-pool round trip per file (open, read, close) cost milliseconds.
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** `kill -0 pid`: true when the pid exists (a zombie included), whatever its owner. */
export function pidExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The verified state of a task: `kill -0` first (no such pid: `gone`), then the state letter from
 * /proc/PID/stat (zombie or dead: `gone`; stopped or traced: `stopped`; anything else: `running`).
 */
export async function taskState(pid: number): Promise<TaskState> {
  if (!pidExists(pid)) return 'gone';
  const st = await readProcStat(pid);
  if (!st) return pidExists(pid) ? 'unknown' : 'gone';
  if (st.state === 'Z' || st.state === 'X' || st.state === 'x') return 'gone';
  if (st.state === 'T' || st.state === 't') return 'stopped';
  return 'running';
}

/** Every process of the tree rooted at `pid`, root first (threads are not listed). Empty if it does not exist. */
export async function processTree(pid: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [pid];
  const seen = new Set<number>();
  while (queue.length > 0) {
    const p = queue.shift() as number;
    if (seen.has(p)) continue;
    seen.add(p);
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    out.push(p);
    for (const tid of tids) {
      try {
        const children = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8');
        for (const c of children.trim().split(/\s+/)) if (c) queue.push(Number(c));
      } catch {
        // the thread exited meanwhile
      }
    }
  }
  return out;
}

async function threadCount(pid: number): Promise<number> {
  try {
    return (await readdir(`/proc/${pid}/task`)).length;
  } catch {
    return 0;
  }
}

/** Fields of /proc/PID/smaps_rollup, in bytes. */
export type SmapsRollup = Record<string, number>;

/** Parses /proc/PID/smaps_rollup (`Name:   123 kB` lines) into bytes per field. */
export function parseSmapsRollup(text: string): SmapsRollup {
  const out: SmapsRollup = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s+(\d+)\s*kB/.exec(line);
    if (m && m[1] !== undefined) out[m[1]] = Number(m[2]) * 1024;
  }
  return out;
}

/**
 * Bytes of memory a CRIU dump of one process carries: private anonymous pages (CoW'd file pages included),
 * swapped-out pages, and its proportional share of shared anonymous memory (dumped once for all sharers).
 * Clean file-backed pages are not dumped: they come back from the files.
 */
export function dumpedBytes(s: SmapsRollup): number {
  return (s.Anonymous ?? 0) + (s.Swap ?? 0) + (s.Pss_Shmem ?? 0);
}

/** Size estimate of a checkpoint of the tree rooted at `pid`, from /proc/PID/smaps_rollup of each process. */
export async function estimateTree(pid: number): Promise<SizeEstimate | undefined> {
  const pids = await processTree(pid);
  if (pids.length === 0) return undefined;
  let memoryBytes = 0;
  let rssBytes = 0;
  let threads = 0;
  for (const p of pids) {
    let text: string;
    try {
      text = await readFile(`/proc/${p}/smaps_rollup`, 'utf8');
    } catch {
      continue;
    }
    const s = parseSmapsRollup(text);
    memoryBytes += dumpedBytes(s);
    rssBytes += s.Rss ?? 0;
    threads += await threadCount(p);
  }
  return {
    memoryBytes,
    gpuMemoryBytes: 0,
    imageBytes: memoryBytes + IMAGE_BASE_BYTES + threads * IMAGE_PER_THREAD_BYTES,
    rssBytes,
    processes: pids.length,
    threads,
    basis: 'smaps_rollup',
  };
}

/** Estimated image bytes of a checkpoint of the tree rooted at `pid` (0 when it does not exist). */
export async function estimateImageBytes(pid: number): Promise<number> {
  return (await estimateTree(pid))?.imageBytes ?? 0;
}

/**
 * Whether CRIU needs `--shell-job` for this tree: the root has a controlling terminal, or its session or
 * process group is led by a process outside the tree (started from a shell without `setsid`).
 */
export function needsShellJob(root: ProcStat, treePids: readonly number[]): boolean {
  const inTree = new Set(treePids);
  return root.ttyNr !== 0 || !inTree.has(root.session) || !inTree.has(root.pgrp);
}

/** Sends `signal` to every pid, ignoring those already gone. */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, signal);
    } catch {
      // gone already
    }
  }
}

/**
 * Waits until none of `pids` exists any more (a zombie still holds its pid), polling and yielding to the event
 * loop so that a parent in this process can reap them. Resolves `false` on timeout.
 */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (pids.every((p) => !pidExists(p))) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Waits until every one of `pids` is dead: gone, or a zombie (it can never run again, though its pid stays
 * taken until its parent reaps it). Resolves `false` on timeout.
 */
export async function waitDead(pids: readonly number[], timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(pids.map((p) => taskState(p)));
    if (states.every((s) => s === 'gone')) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The first child of `pid` as the kernel lists it (`/proc/PID/task/PID/children`), waiting up to `timeoutMs` for one
 * to appear: e.g. the process `unshare --pid --fork` started, pid 1 of its namespace. 0 when none came, or `pid` is
 * gone.
 */
export async function firstChild(pid: number, timeoutMs: number): Promise<number> {
  for (const until = Date.now() + timeoutMs; ; ) {
    try {
      const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
      if (first) return Number(first);
    } catch {
      return 0;
    }
    if (Date.now() >= until) return 0;
    await new Promise((r) => setTimeout(r, 5));
  }
}
