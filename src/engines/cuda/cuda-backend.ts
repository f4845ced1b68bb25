/**
 * Running the CUDA checkpoint API through a command-line backend: spotwatch's own helper
 * (native/build/cuda-checkpoint-helper, built by scripts/build-cuda-helper.sh) or NVIDIA's `cuda-checkpoint`.
 * Each call is one short-lived process; the result is a {@link CudaCallResult} whatever happened (a missing
 * binary, a crash or a kill included), never an exception.
 */
import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOnPath, findProjectExecutable, isExecutable } from '../../util/find-executable.js';
import {
  type CudaCallResult,
  type CudaOp,
  HelperExit,
  cuResultFromText,
  helperArgs,
  nvidiaToolArgs,
  parseHelperOutput,
  parseNvidiaToolState,
} from './helper-protocol.js';

/** Exit values a {@link CudaCallResult} carries when no backend process ran to completion. */
export const BackendExit = {
  /** The backend binary could not be started (missing, not executable). */
  SPAWN_FAILED: -1,
  /** Killed by spotwatch after its time limit. */
  KILLED: -2,
  /** It ran but printed nothing spotwatch understands. */
  BAD_OUTPUT: -3,
  /** Aborted through the caller's AbortSignal before it started. */
  ABORTED: -4,
} as const;

export interface CallOpts {
  /** For `lock`: the driver's own lock timeout (CUcheckpointLockArgs.timeoutMs). */
  lockTimeoutMs?: number;
  /** The backend process is killed (SIGKILL) after this long. */
  killAfterMs: number;
  signal?: AbortSignal;
}

export interface CudaBackend {
  readonly kind: 'helper' | 'nvidia-tool';
  /** Executable run for each call. */
  readonly path: string;
  call(op: CudaOp, pid: number, opts: CallOpts): Promise<CudaCallResult>;
  /** Whether the backend can work on this node (driver present and new enough). */
  probe(opts: CallOpts): Promise<CudaCallResult>;
}

interface RunOutput {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  spawnError?: Error;
  killed: boolean;
  aborted: boolean;
  ms: number;
}

function runProcess(path: string, args: string[], env: NodeJS.ProcessEnv | undefined, opts: CallOpts): Promise<RunOutput> {
  const started = performance.now();
  return new Promise((res) => {
    if (opts.signal?.aborted) {
      res({ stdout: '', stderr: '', exitCode: null, signal: null, killed: false, aborted: true, ms: 0 });
      return;
    }
    let stdout = '';
    let stderr = '';
    let killed = false;
    const aborted = false;
    let spawnError: Error | undefined;
    const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < 1 << 20) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 1 << 20) stderr += d;
    });
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, Math.max(1, opts.killAfterMs));
    // An abort does not kill a driver call in flight (that could leave the process half checkpointed); it only
    // stops calls that have not started. The hook checks the signal between steps.
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ stdout, stderr, exitCode: code, signal, spawnError, killed, aborted, ms: performance.now() - started });
    });
  });
}

function failure(op: CudaCallResult['op'], pid: number | null, exit: number, error: string, ms: number): CudaCallResult {
  return { op, pid, ok: false, state: null, error, code: 0, ms, exit };
}

/** Common outcomes that do not depend on the backend's output format. */
function processFailure(op: CudaCallResult['op'], pid: number | null, path: string, out: RunOutput, opts: CallOpts): CudaCallResult | undefined {
  if (out.aborted) return failure(op, pid, BackendExit.ABORTED, 'aborted before the call started', 0);
  if (out.spawnError) {
    return failure(op, pid, BackendExit.SPAWN_FAILED, `cannot run ${path}: ${out.spawnError.message}`, out.ms);
  }
  if (out.killed) {
    return failure(op, pid, BackendExit.KILLED, `${path} ${op} did not finish within ${opts.killAfterMs} ms and was killed`, out.ms);
  }
  return undefined;
}

/** spotwatch's own helper. */
export class HelperBackend implements CudaBackend {
  readonly kind = 'helper' as const;
  constructor(
    readonly path: string,
    /** Environment for the helper (tests point SPOTWATCH_CUDA_LIBRARY at a driver test double). */
    private readonly env?: NodeJS.ProcessEnv,
  ) {}

  private async run(op: CudaOp | 'probe', pid: number | null, args: string[], opts: CallOpts): Promise<CudaCallResult> {
    const out = await runProcess(this.path, args, this.env, opts);
    const f = processFailure(op, pid, this.path, out, opts);
    if (f) return f;
    const parsed = parseHelperOutput(out.stdout);
    if (!parsed) {
      const why = out.signal ? `died of ${out.signal}` : `exited ${out.exitCode}`;
      const text = (out.stderr || out.stdout).trim().slice(0, 300);
      return failure(op, pid, BackendExit.BAD_OUTPUT, `${this.path} ${op} ${why} without a result line${text ? `: ${text}` : ''}`, out.ms);
    }
    // The exit status is authoritative for ok-ness.
    if (out.exitCode !== HelperExit.OK && parsed.ok) parsed.ok = false;
    if (out.exitCode !== null) parsed.exit = out.exitCode;
    return parsed;
  }

  call(op: CudaOp, pid: number, opts: CallOpts): Promise<CudaCallResult> {
    return this.run(op, pid, helperArgs(op, pid, op === 'lock' ? opts.lockTimeoutMs : undefined), opts);
  }

  probe(opts: CallOpts): Promise<CudaCallResult> {
    return this.run('probe', null, helperArgs('probe'), opts);
  }
}

/**
 * NVIDIA's `cuda-checkpoint`. It reports no CUresult, so the code comes from its message when it names one, and
 * the state after an action is read with a second `--get-state` call.
 */
export class NvidiaToolBackend implements CudaBackend {
  readonly kind = 'nvidia-tool' as const;
  constructor(
    readonly path: string,
    private readonly env?: NodeJS.ProcessEnv,
  ) {}

  async call(op: CudaOp, pid: number, opts: CallOpts): Promise<CudaCallResult> {
    const out = await runProcess(this.path, nvidiaToolArgs(op, pid, op === 'lock' ? opts.lockTimeoutMs : undefined), this.env, opts);
    const f = processFailure(op, pid, this.path, out, opts);
    if (f) return f;
    const text = `${out.stderr}\n${out.stdout}`.trim();
    if (out.exitCode !== 0) {
      const code = cuResultFromText(text);
      return { op, pid, ok: false, state: null, error: text.slice(0, 500) || `exited ${out.exitCode}`, code, ms: out.ms, exit: HelperExit.CUDA_ERROR };
    }
    if (op === 'state') {
      const state = parseNvidiaToolState(out.stdout);
      if (!state) return failure(op, pid, BackendExit.BAD_OUTPUT, `${this.path} --get-state printed nothing`, out.ms);
      return { op, pid, ok: true, state, error: null, code: 0, ms: out.ms, exit: HelperExit.OK };
    }
    const st = await this.call('state', pid, { killAfterMs: opts.killAfterMs });
    return { op, pid, ok: true, state: st.ok ? st.state : null, error: null, code: 0, ms: out.ms, exit: HelperExit.OK };
  }

  async probe(opts: CallOpts): Promise<CudaCallResult> {
    const out = await runProcess(this.path, ['--help'], this.env, opts);
    const f = processFailure('probe', null, this.path, out, opts);
    if (f) return f;
    if (out.exitCode !== 0) {
      return failure('probe', null, HelperExit.NO_DRIVER, `${this.path} --help exited ${out.exitCode}: ${out.stderr.trim().slice(0, 300)}`, out.ms);
    }
    return { op: 'probe', pid: null, ok: true, state: null, error: null, code: 0, ms: out.ms, exit: HelperExit.OK };
  }
}


export const HELPER_NAME = 'cuda-checkpoint-helper';

/** The helper in the nearest directory above `from` (or the cwd) that has `native/build/` or `.spotwatch/bin/`. */
export async function findRepoHelper(from: string = dirname(fileURLToPath(import.meta.url))): Promise<string | undefined> {
  return findProjectExecutable(HELPER_NAME, undefined, from);
}


export interface LocateOptions {
  /** Which backend to prefer when both exist. Default `helper` (JSON output, CUresult codes, its own timings). */
  prefer?: 'helper' | 'nvidia-tool';
  /** Explicit helper path; default `SPOTWATCH_CUDA_HELPER`. */
  helperPath?: string;
  /** Explicit `cuda-checkpoint` path; default `SPOTWATCH_CUDA_CHECKPOINT`, then PATH. */
  nvidiaToolPath?: string;
  env?: NodeJS.ProcessEnv;
}

export type BackendLocation = { ok: true; backend: CudaBackend } | { ok: false; reason: string };

/**
 * Finds a backend: the helper (`SPOTWATCH_CUDA_HELPER`, else native/build/ or .spotwatch/bin/ of the repo) and
 * NVIDIA's tool (`SPOTWATCH_CUDA_CHECKPOINT`, else `cuda-checkpoint` on PATH), in the preferred order.
 */
export async function locateCudaBackend(o: LocateOptions = {}): Promise<BackendLocation> {
  const helperExplicit = o.helperPath ?? process.env.SPOTWATCH_CUDA_HELPER;
  const toolExplicit = o.nvidiaToolPath ?? process.env.SPOTWATCH_CUDA_CHECKPOINT;
  const helper = async (): Promise<CudaBackend | undefined> => {
    const p = helperExplicit || (await findRepoHelper());
    return p && (await isExecutable(p)) ? new HelperBackend(p, o.env) : undefined;
  };
  const tool = async (): Promise<CudaBackend | undefined> => {
    const p = toolExplicit || (await findOnPath('cuda-checkpoint'));
    return p && (await isExecutable(p)) ? new NvidiaToolBackend(p, o.env) : undefined;
  };
  const order = o.prefer === 'nvidia-tool' ? [tool, helper] : [helper, tool];
  for (const f of order) {
    const b = await f();
    if (b) return { ok: true, backend: b };
  }
  return {
    ok: false,
    reason:
      `no CUDA checkpoint backend: ${helperExplicit ? `${helperExplicit} is not executable` : `no ${HELPER_NAME} in native/build/ or .spotwatch/bin/`}` +
      ` and ${toolExplicit ? `${toolExplicit} is not executable` : 'no cuda-checkpoint on PATH'}; run scripts/build-cuda-helper.sh`,
  };
}
