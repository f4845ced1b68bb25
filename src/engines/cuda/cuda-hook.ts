/**
 * The CUDA hook of the CRIU engine: moves a GPU process's device state into host memory before the dump and
 * back onto the GPU after the restore, through the driver's checkpoint API (cuCheckpointProcess*).
 *
 * State machine per GPU process of the task (the driver's CUprocessState):
 *
 *   source, beforeCheckpoint:  running --lock(timeout)--> locked --checkpoint--> checkpointed   (then CRIU dumps)
 *   source, afterCheckpoint:   task still running (failed dump, leaveRunning):
 *                              checkpointed --restore--> locked --unlock--> running
 *   target, afterRestore:      checkpointed --restore--> locked --unlock--> running
 *
 * Every step is followed by a GetState check. ANY failure before the dump (a state other than `running` at the
 * start, a lock timeout, a checkpoint error, a deadline, an abort) rolls every process already touched back to
 * `running` (restore if checkpointed, unlock if locked), so the task keeps running on the source, and throws a
 * {@link CudaHookError} that says which step failed, what the driver said, and the CUDA state verified after
 * the rollback. {@link hookFailure} turns it into the engine's {@link EngineFailure}.
 *
 * Deadlines: refused up front (`DEADLINE_TOO_CLOSE`, nothing touched) when the GPU memory at the assumed
 * device-to-host rate cannot be checkpointed in time; the lock's own timeout is bounded by the time left; a
 * checkpoint that can no longer finish in time is not started (unlock, `DEADLINE_EXCEEDED`). A driver call
 * already running is never killed for the deadline (that could leave the process half checkpointed); only a
 * hard limit per call (default 10 min) kills a hung backend.
 */
import type {
  EngineErrorCode,
  EngineFailure,
  EngineHook,
  HookContext,
  TaskRef,
  TaskState,
} from '../checkpoint-engine.js';
import { engineFailure } from '../checkpoint-engine.js';
import { processTree, taskState } from '../criu/proc.js';
import { BackendExit, type CudaBackend, type LocateOptions, locateCudaBackend } from './cuda-backend.js';
import { gpuMemoryByPid, gpuProcesses, mapsCudaDriver } from './gpu-detect.js';
import { type CudaCallResult, type CudaOp, type CudaProcessState, type FailureKind, classifyFailure } from './helper-protocol.js';

export interface CudaHookOptions {
  /** The backend to use; default: located on first use ({@link locateCudaBackend} with `locate`). */
  backend?: CudaBackend;
  locate?: LocateOptions;
  /** The driver's lock timeout (further bounded by the deadline). Default 10 s. */
  lockTimeoutMs?: number;
  /** Device-to-host rate assumed for deadline checks (bytes/s). Default 1 GB/s (measured: ≈1.2 GB/s on an H100). */
  checkpointBytesPerSec?: number;
  /** Hard limit for one backend call, after which it is killed. Default 10 min. */
  callHardLimitMs?: number;
  /** GPU memory per pid (default: nvidia-smi); tests inject their own. */
  gpuMemory?: () => Promise<Map<number, number> | undefined>;
  /** GPU processes among `pids` (default: /dev/nvidia* in /proc/PID/fd). */
  gpuPids?: (pids: readonly number[]) => Promise<number[]>;
  /** Restored processes that may hold checkpointed CUDA state (default: libcuda.so in /proc/PID/maps). */
  cudaPids?: (pids: readonly number[]) => Promise<number[]>;
  /** Every backend call, as it finishes (for logs and metrics). */
  onCall?: (migrationId: string, call: CudaCallResult, wallMs: number) => void;
}

/** Where a failure happened. */
export type CudaStep = 'backend' | 'inspect' | 'deadline' | 'lock' | 'checkpoint' | 'restore' | 'unlock' | 'verify';

export class CudaHookError extends Error {
  override readonly name = 'CudaHookError';
  constructor(
    message: string,
    /** The engine code this failure should carry (`HOOK_FAILED` unless more precise). */
    readonly engineCode: EngineErrorCode,
    /** `retryable`: the same request may succeed later or elsewhere. */
    readonly engineStatus: 'retryable' | 'fatal',
    readonly step: CudaStep,
    /** The task on this node after the failure (and after the rollback), verified. */
    readonly taskState: TaskState,
    /** CUDA state of each GPU process after the rollback (null: could not be read). */
    readonly cudaStates: Record<number, CudaProcessState | null>,
    /** Every backend call of this hook invocation, in order. */
    readonly calls: CudaCallResult[],
    /** Whether the processes were rolled back to `running` (false: a rollback step failed, see the message). */
    readonly rolledBack: boolean,
  ) {
    super(message);
  }
}

/** The engine failure for an error a CUDA hook threw (anything else: `HOOK_FAILED`, retryable). */
export function hookFailure(err: unknown, startedAt: number, logPath?: string): EngineFailure {
  const extra: Parameters<typeof engineFailure>[4] = { cause: err };
  if (logPath) extra.logPath = logPath;
  if (err instanceof CudaHookError) {
    extra.taskState = err.taskState;
    return engineFailure(err.engineStatus, err.engineCode, err.message, startedAt, extra);
  }
  return engineFailure('retryable', 'HOOK_FAILED', `cuda hook failed: ${(err as Error)?.message ?? String(err)}`, startedAt, extra);
}

/** Engine code and status for a failed driver call. */
export function codeFor(kind: FailureKind | 'deadline' | 'aborted'): { code: EngineErrorCode; status: 'retryable' | 'fatal' } {
  switch (kind) {
    case 'unavailable':
      return { code: 'ENGINE_UNAVAILABLE', status: 'fatal' };
    case 'unsupported':
      return { code: 'TASK_UNSUPPORTED', status: 'fatal' };
    case 'internal':
      return { code: 'INTERNAL', status: 'fatal' };
    case 'deadline':
      return { code: 'DEADLINE_EXCEEDED', status: 'fatal' };
    case 'aborted':
      return { code: 'ABORTED', status: 'fatal' };
    case 'timeout':
    case 'illegal-state':
    case 'not-cuda':
    case 'cuda':
    default:
      return { code: 'HOOK_FAILED', status: 'retryable' };
  }
}

function callKind(r: CudaCallResult): FailureKind | 'deadline' | 'aborted' {
  if (r.exit === BackendExit.SPAWN_FAILED) return 'unavailable';
  if (r.exit === BackendExit.KILLED) return 'deadline';
  if (r.exit === BackendExit.ABORTED) return 'aborted';
  if (r.exit === BackendExit.BAD_OUTPUT) return 'internal';
  return classifyFailure(r);
}

const EXPECTED_AFTER: Record<Exclude<CudaOp, 'state'>, CudaProcessState> = {
  lock: 'locked',
  checkpoint: 'checkpointed',
  restore: 'locked',
  unlock: 'running',
};

interface Run {
  migrationId: string;
  calls: CudaCallResult[];
  timings: Record<string, number>;
}

export class CudaCheckpointHook implements EngineHook {
  readonly name = 'cuda';
  /** The CUDA restore copies the process's host memory back to the device at once: no lazy restore for it. */
  readonly eagerRestore = true;
  private readonly lockTimeoutMs: number;
  private readonly ckptRate: number;
  private readonly hardLimitMs: number;
  private backendPromise: Promise<CudaBackend> | undefined;
  /** GPU pids this hook checkpointed on the source, per migration, until afterCheckpoint. */
  private readonly checkpointed = new Map<string, number[]>();
  private readonly timingsByMigration = new Map<string, Record<string, number>>();

  constructor(private readonly opts: CudaHookOptions = {}) {
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    this.ckptRate = opts.checkpointBytesPerSec ?? 1e9;
    this.hardLimitMs = opts.callHardLimitMs ?? 600_000;
    if (opts.backend) this.backendPromise = Promise.resolve(opts.backend);
  }

  /** The backend, located once; throws a {@link CudaHookError} (`ENGINE_UNAVAILABLE`) when there is none. */
  backend(): Promise<CudaBackend> {
    if (!this.backendPromise) {
      this.backendPromise = locateCudaBackend(this.opts.locate).then((loc) => {
        if (loc.ok) return loc.backend;
        this.backendPromise = undefined;
        throw new CudaHookError(loc.reason, 'ENGINE_UNAVAILABLE', 'fatal', 'backend', 'unknown', {}, [], true);
      });
    }
    return this.backendPromise;
  }

  /** Whether CUDA checkpoints can run on this node: a backend exists and the driver answers. */
  async availability(): Promise<{ available: boolean; reason?: string; backend?: string; driverVersion?: number }> {
    let b: CudaBackend;
    try {
      b = await this.backend();
    } catch (err) {
      return { available: false, reason: (err as Error).message };
    }
    const r = await b.probe({ killAfterMs: 15_000 });
    const out: { available: boolean; reason?: string; backend?: string; driverVersion?: number } = {
      available: r.ok,
      backend: `${b.kind} ${b.path}`,
    };
    if (!r.ok) out.reason = r.error ?? 'probe failed';
    if (r.driverVersion !== undefined) out.driverVersion = r.driverVersion;
    return out;
  }

  /** Per-step wall times (ms) of the last hook calls of a migration: cudaLock, cudaCheckpoint, cudaRestore, cudaUnlock. */
  timings(migrationId: string): Record<string, number> {
    return { ...(this.timingsByMigration.get(migrationId) ?? {}) };
  }

  private async gpuPidsOf(pids: readonly number[]): Promise<number[]> {
    return this.opts.gpuPids ? this.opts.gpuPids(pids) : gpuProcesses(pids);
  }

  private async treeOf(task: TaskRef, pids: readonly number[]): Promise<number[]> {
    if (pids.length > 0) return [...pids];
    return task.kind === 'process' ? processTree(task.pid) : [];
  }

  async appliesTo(task: TaskRef, pids: number[]): Promise<boolean> {
    if (task.kind !== 'process') return false;
    return (await this.gpuPidsOf(await this.treeOf(task, pids))).length > 0;
  }

  async estimate(task: TaskRef, pids: number[]): Promise<{ gpuMemoryBytes: number }> {
    const gpu = await this.gpuPidsOf(await this.treeOf(task, pids));
    return { gpuMemoryBytes: await this.gpuBytes(gpu) };
  }

  private memoryCache: { at: number; byPid: Promise<Map<number, number> | undefined> } | undefined;

  private async gpuBytes(gpuPids: readonly number[]): Promise<number> {
    if (gpuPids.length === 0) return 0;
    // The engine's estimate and beforeCheckpoint ask within milliseconds of each other: one nvidia-smi run serves both.
    if (!this.memoryCache || Date.now() - this.memoryCache.at > 5000) {
      this.memoryCache = { at: Date.now(), byPid: this.opts.gpuMemory ? this.opts.gpuMemory() : gpuMemoryByPid() };
    }
    const byPid = await this.memoryCache.byPid;
    if (!byPid) return 0;
    return gpuPids.reduce((s, p) => s + (byPid.get(p) ?? 0), 0);
  }

  private run(migrationId: string): Run {
    const timings: Record<string, number> = {};
    this.timingsByMigration.set(migrationId, timings);
    return { migrationId, calls: [], timings };
  }

  private async call(run: Run, op: CudaOp, pid: number, lockTimeoutMs?: number): Promise<CudaCallResult> {
    const b = await this.backend();
    const t0 = performance.now();
    const opts: Parameters<CudaBackend['call']>[2] = { killAfterMs: this.hardLimitMs };
    if (lockTimeoutMs !== undefined) {
      opts.lockTimeoutMs = lockTimeoutMs;
      // The driver gives up at its timeout; the backend gets a little more before it is killed.
      opts.killAfterMs = Math.min(this.hardLimitMs, lockTimeoutMs + 15_000);
    }
    const r = await b.call(op, pid, opts);
    const wall = performance.now() - t0;
    run.calls.push(r);
    this.opts.onCall?.(run.migrationId, r, wall);
    return r;
  }

  /**
   * One step on every pid (in parallel: the driver handles each process on its own), each followed by the
   * state check. Returns the first failure, or undefined when all reached the expected state.
   */
  private async step(run: Run, op: Exclude<CudaOp, 'state'>, pids: readonly number[], lockTimeoutMs?: number): Promise<{ pid: number; r: CudaCallResult; why: string } | undefined> {
    const key = `cuda${op[0]?.toUpperCase()}${op.slice(1)}`;
    const t0 = performance.now();
    const results = await Promise.all(pids.map((pid) => this.call(run, op, pid, lockTimeoutMs)));
    run.timings[key] = (run.timings[key] ?? 0) + (performance.now() - t0);
    for (let i = 0; i < pids.length; i++) {
      const r = results[i] as CudaCallResult;
      const pid = pids[i] as number;
      if (!r.ok) return { pid, r, why: r.error ?? `${op} failed` };
      if (r.state !== EXPECTED_AFTER[op]) {
        return { pid, r: { ...r, ok: false }, why: `after ${op} the CUDA state is ${r.state ?? 'unreadable'}, not ${EXPECTED_AFTER[op]}` };
      }
    }
    return undefined;
  }

  private async states(run: Run, pids: readonly number[]): Promise<Record<number, CudaProcessState | null>> {
    const out: Record<number, CudaProcessState | null> = {};
    for (const pid of pids) {
      const r = await this.call(run, 'state', pid);
      out[pid] = r.ok ? r.state : null;
    }
    return out;
  }

  /**
   * Brings every pid back to `running` from wherever it is (checkpointed → restore → locked → unlock). Returns
   * the states afterwards and whether all are running.
   */
  private async rollBack(run: Run, pids: readonly number[]): Promise<{ states: Record<number, CudaProcessState | null>; ok: boolean; errors: string[] }> {
    const errors: string[] = [];
    for (const pid of pids) {
      let st = await this.call(run, 'state', pid);
      if (st.ok && (st.state === 'checkpointed' || st.state === 'checkpointing')) {
        const r = await this.call(run, 'restore', pid);
        if (!r.ok) errors.push(`restore of pid ${pid}: ${r.error}`);
        st = await this.call(run, 'state', pid);
      }
      if (st.ok && st.state === 'locked') {
        const r = await this.call(run, 'unlock', pid);
        if (!r.ok) errors.push(`unlock of pid ${pid}: ${r.error}`);
      }
    }
    const states = await this.states(run, pids);
    const ok = pids.every((p) => states[p] === 'running');
    return { states, ok, errors };
  }

  /** Rolls back, verifies, and builds the error to throw. */
  private async fail(
    run: Run,
    ctx: HookContext,
    touched: readonly number[],
    step: CudaStep,
    kind: FailureKind | 'deadline' | 'aborted',
    what: string,
  ): Promise<CudaHookError> {
    let rb = { states: {} as Record<number, CudaProcessState | null>, ok: true, errors: [] as string[] };
    if (touched.length > 0) rb = await this.rollBack(run, touched);
    const ts = ctx.task.kind === 'process' ? await taskState(ctx.task.pid) : 'unknown';
    const { code, status } = codeFor(kind);
    const where =
      touched.length === 0
        ? 'nothing was touched'
        : rb.ok
          ? `rolled back: CUDA state running again (${fmtStates(rb.states)})`
          : `ROLLBACK FAILED (${fmtStates(rb.states)}${rb.errors.length ? `; ${rb.errors.join('; ')}` : ''}): the task cannot use its GPU until its CUDA state is restored and unlocked`;
    const msg = `cuda ${step} failed for task ${ctx.task.id ?? describeTask(ctx.task)}: ${what}; ${where}; the task is ${ts} on this node`;
    return new CudaHookError(msg, code, status, step, ts, rb.states, run.calls, rb.ok);
  }

  async beforeCheckpoint(ctx: HookContext): Promise<void> {
    const run = this.run(ctx.migrationId);
    this.checkpointed.delete(ctx.migrationId);
    const gpuPids = await this.gpuPidsOf(await this.treeOf(ctx.task, ctx.pids));
    if (gpuPids.length === 0) return;
    if (ctx.signal.aborted) throw await this.fail(run, ctx, [], 'inspect', 'aborted', 'aborted before the CUDA checkpoint started');
    try {
      await this.backend();
    } catch (err) {
      if (err instanceof CudaHookError) throw err;
      throw await this.fail(run, ctx, [], 'backend', 'unavailable', (err as Error).message);
    }

    // Deadline, before anything is touched.
    const gpuBytes = await this.gpuBytes(gpuPids);
    const needMs = (gpuBytes / this.ckptRate) * 1000;
    const left = ctx.deadline - Date.now();
    if (left < needMs + 100) {
      const e = await this.fail(run, ctx, [], 'deadline', 'deadline', `${fmtBytes(gpuBytes)} of GPU memory needs ≈${Math.ceil(needMs)} ms to checkpoint at ${fmtBytes(this.ckptRate)}/s but ${Math.max(0, Math.round(left))} ms are left`);
      throw new CudaHookError(e.message, 'DEADLINE_TOO_CLOSE', 'fatal', e.step, e.taskState, e.cudaStates, e.calls, true);
    }

    // Every GPU process must be running (and a CUDA process at all).
    for (const pid of gpuPids) {
      const r = await this.call(run, 'state', pid);
      if (!r.ok) throw await this.fail(run, ctx, [], 'inspect', callKind(r), `GetState of pid ${pid}: ${r.error}`);
      if (r.state !== 'running') {
        throw await this.fail(run, ctx, [], 'inspect', 'illegal-state', `pid ${pid} is in CUDA state ${r.state}, not running (another checkpoint in progress or left over?)`);
      }
    }

    // Lock, bounded by the deadline.
    const lockMs = Math.max(1, Math.min(this.lockTimeoutMs, ctx.deadline - Date.now() - needMs));
    const lockFail = await this.step(run, 'lock', gpuPids, lockMs);
    if (lockFail) {
      const extra = classifyFailure(lockFail.r) === 'timeout' ? ` (the lock did not come within ${Math.round(lockMs)} ms)` : '';
      throw await this.fail(run, ctx, gpuPids, 'lock', callKind(lockFail.r), `pid ${lockFail.pid}: ${lockFail.why}${extra}`);
    }
    if (ctx.signal.aborted) throw await this.fail(run, ctx, gpuPids, 'lock', 'aborted', 'aborted after the lock');
    const leftNow = ctx.deadline - Date.now();
    if (leftNow < needMs) {
      throw await this.fail(run, ctx, gpuPids, 'deadline', 'deadline', `after the lock ${Math.max(0, Math.round(leftNow))} ms are left, the checkpoint needs ≈${Math.ceil(needMs)} ms`);
    }

    // Checkpoint: device memory into host memory.
    const ckFail = await this.step(run, 'checkpoint', gpuPids);
    if (ckFail) throw await this.fail(run, ctx, gpuPids, 'checkpoint', callKind(ckFail.r), `pid ${ckFail.pid}: ${ckFail.why}`);
    if (ctx.signal.aborted) throw await this.fail(run, ctx, gpuPids, 'checkpoint', 'aborted', 'aborted after the CUDA checkpoint');
    this.checkpointed.set(ctx.migrationId, gpuPids);
  }

  async afterCheckpoint(ctx: HookContext & { ok: boolean; taskState: TaskState }): Promise<void> {
    const pids = this.checkpointed.get(ctx.migrationId);
    this.checkpointed.delete(ctx.migrationId);
    if (!pids || pids.length === 0) return;
    if (ctx.taskState === 'gone') return; // the image holds the only copy now
    // Running (failed dump, leaveRunning) or stopped: give the task its GPU back on the source.
    const run = this.run(ctx.migrationId);
    const rb = await this.rollBack(run, pids);
    if (!rb.ok) {
      const ts = ctx.task.kind === 'process' ? await taskState(ctx.task.pid) : 'unknown';
      throw new CudaHookError(
        `cuda restore on the source failed for task ${ctx.task.id ?? describeTask(ctx.task)} after ${ctx.ok ? 'a snapshot' : 'a failed dump'}: ${fmtStates(rb.states)}${rb.errors.length ? `; ${rb.errors.join('; ')}` : ''}`,
        'HOOK_FAILED',
        'retryable',
        'restore',
        ts,
        rb.states,
        run.calls,
        false,
      );
    }
  }

  async afterRestore(ctx: HookContext): Promise<void> {
    const run = this.run(ctx.migrationId);
    const tree = await this.treeOf(ctx.task, ctx.pids);
    // After a CRIU restore the GPU processes hold no device node: candidates are the processes that map the CUDA
    // driver, and their CUDA state says which ones were checkpointed.
    const pids = this.opts.cudaPids ? await this.opts.cudaPids(tree) : await filterAsync(tree, (p) => mapsCudaDriver(p));
    if (pids.length === 0) return;
    const checkpointed: number[] = [];
    for (const pid of pids) {
      const r = await this.call(run, 'state', pid);
      if (r.ok && r.state === 'checkpointed') checkpointed.push(pid);
      else if (r.ok && r.state !== 'running') {
        throw await this.restoreError(run, ctx, 'inspect', `pid ${pid} is in CUDA state ${r.state} after the CRIU restore`);
      } else if (!r.ok && callKind(r) === 'unavailable') {
        throw await this.restoreError(run, ctx, 'backend', r.error ?? 'no CUDA driver', 'unavailable');
      }
      // Anything else: not a CUDA process.
    }
    if (checkpointed.length === 0) return;
    const rf = await this.step(run, 'restore', checkpointed);
    if (rf) throw await this.restoreError(run, ctx, 'restore', `pid ${rf.pid}: ${rf.why}`, callKind(rf.r));
    const uf = await this.step(run, 'unlock', checkpointed);
    if (uf) throw await this.restoreError(run, ctx, 'unlock', `pid ${uf.pid}: ${uf.why}`, callKind(uf.r));
  }

  private async restoreError(run: Run, ctx: HookContext, step: CudaStep, what: string, kind: FailureKind | 'deadline' | 'aborted' = 'cuda'): Promise<CudaHookError> {
    const pids = await this.treeOf(ctx.task, ctx.pids);
    const states = await this.states(run, pids);
    const ts = ctx.task.kind === 'process' ? await taskState(ctx.task.pid) : 'unknown';
    const { code, status } = codeFor(kind);
    return new CudaHookError(
      `cuda ${step} on the target failed for task ${ctx.task.id ?? describeTask(ctx.task)}: ${what} (${fmtStates(states)})`,
      code,
      status,
      step,
      ts,
      states,
      run.calls,
      false,
    );
  }
}

async function filterAsync<T>(xs: readonly T[], f: (x: T) => Promise<boolean>): Promise<T[]> {
  const keep = await Promise.all(xs.map(f));
  return xs.filter((_, i) => keep[i]);
}

function describeTask(t: TaskRef): string {
  return t.kind === 'process' ? `pid ${t.pid}` : `${t.runtime}:${t.containerId}`;
}

function fmtStates(s: Record<number, CudaProcessState | null>): string {
  const e = Object.entries(s);
  return e.length ? e.map(([p, st]) => `pid ${p}: ${st ?? 'unreadable'}`).join(', ') : 'no CUDA processes';
}

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${Math.round(n)} B`;
}
