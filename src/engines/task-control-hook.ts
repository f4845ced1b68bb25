/**
 * The task-control hook: a task that cooperates with its checkpoints (see {@link TaskControl}) is told before the
 * checkpoint and after it runs again, over HTTP.
 *
 * - `beforeCheckpoint`: POST `prepareUrl` with `{"event":"prepare","migrationId","deadline"}`; a 2xx means the task
 *   has stopped its work and released what it chose to. It runs before every other hook (the hooks run in order:
 *   the task may still need its GPU to release memory, before the CUDA lock), and downtime starts here. When the
 *   target already holds what the task staged (see {@link TaskControl.stageUrl}), the body names it
 *   (`"stagedDirectory"`): the task may release what it staged and keep only what changed since in its memory.
 * - `afterCheckpoint`: when the task is still `running` on the source (the checkpoint failed, or `leaveRunning`),
 *   POST `resumeUrl` so it takes its work up again there.
 * - `afterRestore`: POST `resumeUrl` on the target, after every other hook (the CUDA restore and unlock) — the task
 *   reloads what it released and continues; the restore counts as done only then.
 *
 * Every resume names `"stagedDirectory"` when the task staged for this migration: where the staged files lie on the
 * node it now runs on (the target's copy after a restore, the source's own after a checkpoint that did not happen).
 *
 * The connection is never kept alive: the task's end of it must be closed before CRIU dumps the process (an
 * established TCP connection fails a dump without `--tcp-established`), so the hook waits for the connection to
 * close, not just for the response. A prepare that fails still gets a resume (best effort): the task may have begun.
 */
import { request } from 'node:http';
import type { EngineHook, HookContext, TaskControl, TaskRef } from './checkpoint-engine.js';

/** The share of the time left that one control call may take, and its bounds. */
const CALL_SHARE = 0.25;
const MIN_CALL_MS = 1_000;
const MAX_CALL_MS = 60_000;

export class TaskControlError extends Error {
  readonly code = 'TASK_CONTROL_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TaskControlError';
  }
}

function controlOf(task: TaskRef): TaskControl | undefined {
  return task.kind === 'process' ? task.control : undefined;
}

/** One POST with `Connection: close`; resolves once the response is read and the connection has closed. */
export function postControl(url: string, body: Record<string, unknown>, timeoutMs: number, signal?: AbortSignal): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch (err) {
      reject(new TaskControlError(`${url} is not a URL`, { cause: err }));
      return;
    }
    if (target.protocol !== 'http:') {
      reject(new TaskControlError(`${url}: task control endpoints are plain http on the task's node (got ${target.protocol})`));
      return;
    }
    const payload = JSON.stringify(body);
    let settled = false;
    const done = (err?: Error, value?: { status: number; body: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(value!);
    };
    const req = request(target, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)), connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 64 * 1024) chunks.push(c);
      });
      res.on('end', () => {
        const value = { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') };
        // Wait for the connection itself to close (the task's end first), then answer; a task that keeps it open
        // despite `Connection: close` gets it closed from here after a moment.
        const socket = req.socket;
        if (!socket || socket.destroyed) return done(undefined, value);
        const closeAnyway = setTimeout(() => socket.destroy(), 1_000);
        socket.once('close', () => {
          clearTimeout(closeAnyway);
          done(undefined, value);
        });
      });
      res.on('error', (err) => done(new TaskControlError(`${url}: ${err.message}`, { cause: err })));
    });
    const timer = setTimeout(() => {
      req.destroy();
      done(new TaskControlError(`${url} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = (): void => {
      req.destroy();
      done(new TaskControlError(`${url}: aborted`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => done(new TaskControlError(`${url}: ${err.message}`, { cause: err })));
    req.end(payload);
  });
}

export class TaskControlHook implements EngineHook {
  readonly name = 'task-control';

  appliesTo(task: TaskRef): Promise<boolean> {
    const c = controlOf(task);
    return Promise.resolve(c?.prepareUrl !== undefined || c?.resumeUrl !== undefined);
  }

  async beforeCheckpoint(ctx: HookContext): Promise<void> {
    const url = controlOf(ctx.task)?.prepareUrl;
    if (!url) return;
    try {
      await this.call(url, 'prepare', ctx);
    } catch (err) {
      await this.resume(ctx).catch(() => {}); // the task may have begun to prepare
      throw err;
    }
  }

  async afterCheckpoint(ctx: HookContext & { ok: boolean; taskState: string }): Promise<void> {
    if (ctx.taskState === 'running') await this.resume(ctx);
  }

  async afterRestore(ctx: HookContext): Promise<void> {
    await this.resume(ctx);
  }

  private async resume(ctx: HookContext): Promise<void> {
    const url = controlOf(ctx.task)?.resumeUrl;
    if (url) await this.call(url, 'resume', ctx);
  }

  private async call(url: string, event: 'prepare' | 'resume', ctx: HookContext): Promise<void> {
    const left = ctx.deadline - Date.now();
    const timeoutMs = Math.min(MAX_CALL_MS, Math.max(MIN_CALL_MS, Math.round(left * CALL_SHARE)));
    const body = { event, migrationId: ctx.migrationId, deadline: new Date(ctx.deadline).toISOString(), ...(ctx.stagedDirectory ? { stagedDirectory: ctx.stagedDirectory } : {}) };
    const r = await postControl(url, body, timeoutMs, ctx.signal);
    if (r.status < 200 || r.status > 299) {
      throw new TaskControlError(`the task answered ${event} at ${url} with HTTP ${r.status}${r.body ? `: ${r.body.slice(0, 200)}` : ''}`);
    }
  }
}
