/**
 * Pre-copy with the task's help ({@link TaskControl.stageUrl}).
 *
 * A checkpoint moves every byte of the task inside the frozen window. Much of a serving process's state does not
 * change any more once written — a KV cache's filled prefix, a snapshot plus the journal the task keeps from then on
 * — so a task that knows which bytes those are can hand them over while it keeps working: spotwatch asks it to write
 * them into a directory (the *stage*), sends that directory to the target ahead of the freeze, and then tells the
 * task at prepare that the target holds it. The task releases what it staged and keeps only what changed since in
 * its memory, which the checkpoint carries; on resume it reads the staged files back from the node it now runs on.
 *
 * Kernels without soft-dirty tracking (CRIU's own pre-copy) and the CUDA checkpoint (device memory reaches host
 * memory only inside the frozen window) leave this as the way to move bulk state before the freeze.
 *
 * Contract with the task: the stage call returns 2xx once every file is complete; the files stay valid for the rest
 * of the migration (the task only ever adds to its state after staging, in memory). Anything else in the directory
 * than plain files with plain names is refused. A stage that fails or is late costs nothing but time: prepare does
 * not name a staged directory, so the task keeps everything and the checkpoint moves it.
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isSafeImageFileName } from '../engines/criu/image-stream.js';
import { postControl } from '../engines/task-control-hook.js';

export class TaskStageError extends Error {
  readonly code = 'TASK_STAGE_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TaskStageError';
  }
}

export interface StagedFiles {
  /** The directory on this node that holds the staged files. */
  directory: string;
  files: number;
  bytes: number;
  /** Time the task took to write them. */
  stageMs: number;
}

/**
 * Asks the task at `url` to stage into `directory` (emptied first) and checks what it wrote.
 * `timeoutMs` bounds the call; `signal` aborts it.
 */
export async function stageTask(url: string, migrationId: string, directory: string, deadline: number, timeoutMs: number, signal?: AbortSignal): Promise<StagedFiles> {
  await rm(directory, { recursive: true, force: true });
  await mkdir(directory, { recursive: true });
  const started = Date.now();
  const r = await postControl(url, { event: 'stage', migrationId, deadline: new Date(deadline).toISOString(), directory }, timeoutMs, signal).catch((err: unknown) => {
    throw new TaskStageError(`staging through ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  const stageMs = Date.now() - started;
  if (r.status < 200 || r.status > 299) {
    throw new TaskStageError(`the task answered stage at ${url} with HTTP ${r.status}${r.body ? `: ${r.body.slice(0, 200)}` : ''}`);
  }
  let files = 0;
  let bytes = 0;
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    if (!entry.isFile() || !isSafeImageFileName(entry.name)) {
      throw new TaskStageError(`the task staged ${JSON.stringify(entry.name)} in ${directory}: only plain files with plain names can be sent`);
    }
    files++;
    bytes += (await stat(join(directory, entry.name))).size;
  }
  return { directory, files, bytes, stageMs };
}

/** Where a node keeps the staged files it received for a migration (beside the image, never inside it). */
export function stagedDirectoryFor(imageDir: string, migrationId: string): string {
  return join(imageDir, `${migrationId}.staged`);
}

/** Where the source asks the task to stage for a migration. */
export function stagingDirectoryFor(imageDir: string, migrationId: string): string {
  return join(imageDir, `${migrationId}.stage`);
}
