/**
 * Transparent huge pages and GPU checkpoints.
 *
 * Every byte of a GPU task's state crosses host memory four times in a migration: the CUDA checkpoint copies
 * device memory into the process, CRIU dumps it, CRIU restores it into a new process, the CUDA restore copies it
 * back. With the kernel's `transparent_hugepage` at `madvise` (the default of most distributions) each of those
 * copies faults its destination in 4 KiB at a time; at `always` in 2 MiB. Measured on an H100 with the 8 B model
 * and 32 k context (27 GiB of GPU state, docs/gpu.md): downtime 88.3 s at `madvise`, 49.9 s at `always`, every
 * stage faster (CUDA checkpoint 23.3 → 12.2 s, dump 34.1 → 20.5 s, restore 21.6 → 12.3 s, CUDA restore 7.3 → 4.7 s).
 *
 * It is a node-wide setting, so the agent only changes it when told to (`--transparent-hugepages always`); by
 * default it keeps the node's setting and, on a node with GPUs where it is not `always`, says what it costs.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { describeError } from '../errors.js';

export const THP_ENABLED_PATH = '/sys/kernel/mm/transparent_hugepage/enabled';

export type ThpMode = 'always' | 'madvise' | 'never';
/** What the agent does about it: leave the node's setting (default), or set `always`. */
export type ThpPolicy = 'keep' | 'always';

/** The selected mode in the sysfs file's text (`always [madvise] never`), or undefined when it has none. */
export function parseThpMode(text: string): ThpMode | undefined {
  const m = /\[(always|madvise|never)\]/.exec(text);
  return m ? (m[1] as ThpMode) : undefined;
}

export async function readThpMode(path: string = THP_ENABLED_PATH): Promise<ThpMode | undefined> {
  try {
    return parseThpMode(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface ThpOutcome {
  /** The mode before the agent looked (undefined: the kernel has no THP, or the file is unreadable). */
  before: ThpMode | undefined;
  /** The mode now. */
  after: ThpMode | undefined;
  /** `set`: the agent changed it; `kept`: left as it was; `failed`: asked to set it and could not. */
  action: 'set' | 'kept' | 'failed';
  /** One line for the log: what the setting is, and what to do when it costs GPU migrations time. */
  message: string;
  /** Whether the message is a warning (GPU checkpoints run slower than they could). */
  warn: boolean;
}

/**
 * Applies the policy: `always` writes `always` to the sysfs file (root, with /sys writable — a privileged
 * container or the host) unless it is already set; `keep` leaves it. Never throws: a failure is an outcome.
 */
export async function applyThpPolicy(policy: ThpPolicy, gpuCount: number, path: string = THP_ENABLED_PATH): Promise<ThpOutcome> {
  const before = await readThpMode(path);
  const cost = 'GPU checkpoints and restores fault host memory in 4 KiB pages (measured on an H100: 1.8x longer downtime than with always, docs/gpu.md)';
  if (policy === 'always' && before !== 'always') {
    try {
      await writeFile(path, 'always');
      const after = await readThpMode(path);
      if (after === 'always') return { before, after, action: 'set', message: `transparent_hugepage set to always (was ${before ?? 'unknown'})`, warn: false };
      return { before, after, action: 'failed', message: `transparent_hugepage is still ${after ?? 'unknown'} after writing always to ${path}; ${cost}`, warn: true };
    } catch (err) {
      return {
        before,
        after: before,
        action: 'failed',
        message:
          `cannot set transparent_hugepage to always (${describeError(err)}): ${path} must be writable — run the agent privileged, ` +
          `or set it on the host (kernel parameter transparent_hugepage=always); ${cost}`,
        warn: true,
      };
    }
  }
  if (before !== 'always' && gpuCount > 0) {
    return { before, after: before, action: 'kept', message: `transparent_hugepage is ${before ?? 'unavailable'} on a node with ${gpuCount} GPU(s): ${cost}; --transparent-hugepages always sets it`, warn: true };
  }
  return { before, after: before, action: 'kept', message: `transparent_hugepage is ${before ?? 'unavailable'}`, warn: false };
}
