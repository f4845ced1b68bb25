/**
 * What post-copy from the source needs from the node, and facts about a tree that decide whether it can use it.
 *
 * `criu dump --lazy-pages` keeps the frozen tree's memory in pipes and serves requested ranges from them with
 * `tee()` into a pipe it first grows to ~3.2 MiB (CRIU's PIPE_MAX_SIZE). Growing a pipe past `fs.pipe-max-size`
 * (1 MiB by default) needs CAP_SYS_RESOURCE; without it the grow fails unnoticed, every `tee()` of more than 64 KiB
 * comes back short, and the first page request fails ("tee: 65536: Operation not permitted" — the errno is stale).
 * Root in a container often lacks CAP_SYS_RESOURCE (the CI machine does): then `fs.pipe-max-size` must be raised.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/** The `fs.pipe-max-size` CRIU's lazy page server needs without CAP_SYS_RESOURCE (a power of two ≥ its 3.2 MiB). */
export const POST_COPY_PIPE_MAX_BYTES = 4 * 1024 * 1024;
const PIPE_MAX_SIZE_PATH = '/proc/sys/fs/pipe-max-size';
const CAP_SYS_RESOURCE = 24;

function hasCapability(bit: number, status = readFileSync('/proc/self/status', 'utf8')): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << BigInt(bit))) !== 0n;
}

function pipeMaxSize(): number {
  try {
    return Number(readFileSync(PIPE_MAX_SIZE_PATH, 'utf8').trim());
  } catch {
    return 0;
  }
}

/** Why CRIU's lazy page server would fail here, or undefined when it can work. */
export function postCopyBlocker(): string | undefined {
  try {
    if (hasCapability(CAP_SYS_RESOURCE)) return undefined;
  } catch {
    // no /proc/self/status: judge by the sysctl alone
  }
  const size = pipeMaxSize();
  if (size >= POST_COPY_PIPE_MAX_BYTES) return undefined;
  return `fs.pipe-max-size is ${size} and the agent lacks CAP_SYS_RESOURCE: CRIU's lazy page server needs ${POST_COPY_PIPE_MAX_BYTES} (sysctl -w fs.pipe-max-size=${POST_COPY_PIPE_MAX_BYTES})`;
}

/**
 * Raises `fs.pipe-max-size` to what post-copy needs, when it is lower and nothing else would do (the agent does this
 * only when post-copy is turned on). Returns what it did, or why it could not.
 */
export function raisePipeMaxForPostCopy(): { changed: false; reason?: string } | { changed: true; from: number } {
  if (postCopyBlocker() === undefined) return { changed: false };
  const from = pipeMaxSize();
  try {
    writeFileSync(PIPE_MAX_SIZE_PATH, String(POST_COPY_PIPE_MAX_BYTES));
    return { changed: true, from };
  } catch (err) {
    return { changed: false, reason: `cannot write ${PIPE_MAX_SIZE_PATH}: ${(err as Error).message}` };
  }
}

/**
 * True when `pid` is the init (pid 1) of a pid namespace below this process's: CRIU then dumps the namespace, and a
 * restore makes a new one, so the tree's pids need not be free where it is restored.
 */
export function isPidNamespaceRoot(pid: number): boolean {
  const nspid = (text: string): string[] => /^NSpid:\s*(.*)$/m.exec(text)?.[1]?.trim().split(/\s+/) ?? [];
  try {
    const own = nspid(readFileSync('/proc/self/status', 'utf8'));
    const its = nspid(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return its.length > own.length && its[its.length - 1] === '1';
  } catch {
    return false;
  }
}

/**
 * When `criu dump` seized (froze) the tree, in wall-clock ms: its log stamps lines with seconds since CRIU started
 * logging, so the seize is placed relative to the moment CRIU said it was ready (`readyAt`: when its status byte
 * arrived here, a fraction of a ms after it wrote "Running status-ready scripts"). Without those lines (log level
 * below 3) the dump's start is the answer: early, so downtime is over- rather than under-counted.
 */
export function seizedAtFromLog(log: string, dumpStartedAt: number, readyAt: number): number {
  const stamp = (re: RegExp): number | undefined => {
    const m = re.exec(log);
    return m ? Number(m[1]) * 1000 + Number(`0.${m[2]}`) * 1000 : undefined;
  };
  const seized = stamp(/^\((\d+)\.(\d+)\) Seized task/m);
  const ready = stamp(/^\((\d+)\.(\d+)\) Running status-ready scripts/m);
  if (seized === undefined || ready === undefined || ready < seized) return dumpStartedAt;
  return Math.max(dumpStartedAt, Math.round(readyAt - (ready - seized)));
}
