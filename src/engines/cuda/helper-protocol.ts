/**
 * The two command-line backends that reach the CUDA driver's checkpoint API, as pure functions: argument lists,
 * output parsing and error classification. No I/O here, so every choice is unit-tested.
 *
 * - spotwatch's own helper (native/cuda-checkpoint-helper.c): `HELPER state|lock|checkpoint|restore|unlock PID
 *   [--timeout-ms N]` and `HELPER probe`, one JSON line out, distinct exit codes ({@link HelperExit}).
 * - NVIDIA's `cuda-checkpoint` utility (github.com/NVIDIA/cuda-checkpoint, r570+): `--get-state --pid PID`
 *   prints the state word; `--action lock|checkpoint|restore|unlock --pid PID [--timeout MS]` prints nothing
 *   on success and a message on stderr with a non-zero exit on failure.
 */

/** Exit codes of native/cuda-checkpoint-helper (keep in sync with the C source). */
export const HelperExit = {
  OK: 0,
  USAGE: 2,
  /** libcuda.so.1 cannot be loaded: no NVIDIA driver on this node. */
  NO_DRIVER: 3,
  /** The driver lacks a checkpoint symbol: older than r570. */
  DRIVER_TOO_OLD: 4,
  /** The CUDA call itself failed (`code` holds the CUresult). */
  CUDA_ERROR: 5,
  /** cuInit failed: a driver without a usable device. */
  INIT_FAILED: 6,
} as const;

/** The driver's CUprocessState, as words; `unknown` for a value this code does not know. */
export type CudaProcessState = 'running' | 'locked' | 'checkpointed' | 'failed' | 'checkpointing' | 'restoring' | 'unknown';

export const CUDA_STATES: readonly CudaProcessState[] = [
  'running',
  'locked',
  'checkpointed',
  'failed',
  'checkpointing',
  'restoring',
  'unknown',
];

export type CudaOp = 'state' | 'lock' | 'checkpoint' | 'restore' | 'unlock';

/** CUresult values the hook reasons about (cuda.h). */
export const CuResult = {
  SUCCESS: 0,
  INVALID_VALUE: 1,
  NOT_INITIALIZED: 3,
  NO_DEVICE: 100,
  ILLEGAL_STATE: 401,
  NOT_FOUND: 500,
  NOT_READY: 600,
  NOT_SUPPORTED: 801,
  TIMEOUT: 909,
} as const;

/** What a backend call produced, whichever backend ran it. */
export interface CudaCallResult {
  op: CudaOp | 'probe';
  pid: number | null;
  ok: boolean;
  /** The process's CUDA state after the call, when the backend could read it. */
  state: CudaProcessState | null;
  /** Error text (driver's name and description, or the tool's message). */
  error: string | null;
  /** CUresult of the call (0 on success; 0 also when the failure was not a CUDA error). */
  code: number;
  /** Duration of the driver call itself, ms (the helper measures it; for the NVIDIA tool: the process's wall time). */
  ms: number;
  /** How the backend ended: one of {@link HelperExit} for the helper. */
  exit: number;
  /** From `probe`: cuDriverGetVersion, e.g. 13000. */
  driverVersion?: number;
}

function isState(s: unknown): s is CudaProcessState {
  return typeof s === 'string' && (CUDA_STATES as readonly string[]).includes(s);
}

/** Arguments for the helper. */
export function helperArgs(op: CudaOp | 'probe', pid?: number, timeoutMs?: number): string[] {
  if (op === 'probe') return ['probe'];
  if (pid === undefined || !Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`);
  const a: string[] = [op, String(pid)];
  if (op === 'lock' && timeoutMs !== undefined) {
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new RangeError(`invalid lock timeout ${timeoutMs}`);
    // 0 would mean "no timeout" to the driver; a caller that asked for a bound gets at least 1 ms.
    a.push('--timeout-ms', String(Math.max(1, Math.min(0xffffffff, Math.floor(timeoutMs)))));
  }
  return a;
}

/**
 * Parses the helper's one JSON line (the last non-empty line of stdout). Returns undefined when there is none
 * or it is not the helper's shape (a crash, a wrong binary).
 */
export function parseHelperOutput(stdout: string): CudaCallResult | undefined {
  const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1];
  if (!last) return undefined;
  let j: unknown;
  try {
    j = JSON.parse(last);
  } catch {
    return undefined;
  }
  if (typeof j !== 'object' || j === null) return undefined;
  const o = j as Record<string, unknown>;
  if (typeof o.op !== 'string' || typeof o.ok !== 'boolean' || typeof o.code !== 'number') return undefined;
  const r: CudaCallResult = {
    op: o.op as CudaCallResult['op'],
    pid: typeof o.pid === 'number' ? o.pid : null,
    ok: o.ok,
    state: o.state === null || o.state === undefined ? null : isState(o.state) ? o.state : 'unknown',
    error: typeof o.error === 'string' ? o.error : null,
    code: o.code,
    ms: typeof o.ms === 'number' ? o.ms : 0,
    exit: typeof o.exit === 'number' ? o.exit : o.ok ? HelperExit.OK : HelperExit.CUDA_ERROR,
  };
  if (typeof o.driverVersion === 'number') r.driverVersion = o.driverVersion;
  return r;
}

/** Arguments for NVIDIA's `cuda-checkpoint`. */
export function nvidiaToolArgs(op: CudaOp, pid: number, timeoutMs?: number): string[] {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`);
  if (op === 'state') return ['--get-state', '--pid', String(pid)];
  const a = ['--action', op, '--pid', String(pid)];
  if (op === 'lock' && timeoutMs !== undefined) a.push('--timeout', String(Math.max(1, Math.floor(timeoutMs))));
  return a;
}

/** Parses `cuda-checkpoint --get-state` output (`running`, `locked`, `checkpointed`, `failed`, …). */
export function parseNvidiaToolState(stdout: string): CudaProcessState | undefined {
  const word = stdout.trim().split(/\s+/).pop()?.toLowerCase();
  if (!word) return undefined;
  return isState(word) ? word : 'unknown';
}

/**
 * The CUresult inside an error message, when the text names one: `CUDA_ERROR_NOT_SUPPORTED`, `error 801`,
 * `(801)`. The NVIDIA tool prints messages such as "Could not lock process 123: CUDA_ERROR_TIMEOUT".
 */
export function cuResultFromText(text: string): number {
  const names: Record<string, number> = {
    CUDA_ERROR_INVALID_VALUE: CuResult.INVALID_VALUE,
    CUDA_ERROR_NOT_INITIALIZED: CuResult.NOT_INITIALIZED,
    CUDA_ERROR_NO_DEVICE: CuResult.NO_DEVICE,
    CUDA_ERROR_ILLEGAL_STATE: CuResult.ILLEGAL_STATE,
    CUDA_ERROR_NOT_FOUND: CuResult.NOT_FOUND,
    CUDA_ERROR_NOT_READY: CuResult.NOT_READY,
    CUDA_ERROR_NOT_SUPPORTED: CuResult.NOT_SUPPORTED,
    CUDA_ERROR_TIMEOUT: CuResult.TIMEOUT,
  };
  for (const [n, c] of Object.entries(names)) if (text.includes(n)) return c;
  const m = /\b(?:error|code|CUresult)[ =:]*(\d{1,4})\b|\((\d{1,4})\)/i.exec(text);
  return m ? Number(m[1] ?? m[2]) : 0;
}

/** How a failed call should be treated. */
export type FailureKind =
  /** The node cannot do CUDA checkpoints at all (no driver, too old, no device, helper missing). */
  | 'unavailable'
  /** The process is not (or no longer) a CUDA process, or does not exist. */
  | 'not-cuda'
  /** The driver refuses this process for good (UVM, IPC memory, …): CUDA_ERROR_NOT_SUPPORTED. */
  | 'unsupported'
  /** The lock did not come in time (the process is busy in a long CUDA call); may work when tried again. */
  | 'timeout'
  /** The process is in another state than the step needs. */
  | 'illegal-state'
  /** Any other driver error. */
  | 'cuda'
  /** spotwatch's own bug: bad arguments to the helper, unparsable output. */
  | 'internal';

/** Classifies a failed {@link CudaCallResult}. */
export function classifyFailure(r: CudaCallResult): FailureKind {
  switch (r.exit) {
    case HelperExit.NO_DRIVER:
    case HelperExit.DRIVER_TOO_OLD:
    case HelperExit.INIT_FAILED:
      return 'unavailable';
    case HelperExit.USAGE:
      return 'internal';
    default:
      break;
  }
  switch (r.code) {
    case CuResult.NOT_SUPPORTED:
      return 'unsupported';
    case CuResult.TIMEOUT:
    case CuResult.NOT_READY:
      return 'timeout';
    case CuResult.ILLEGAL_STATE:
      return 'illegal-state';
    case CuResult.NOT_FOUND:
    case CuResult.NOT_INITIALIZED:
    case CuResult.INVALID_VALUE:
      // The driver's answer for a pid that holds no CUDA context (or does not exist).
      return 'not-cuda';
    case CuResult.NO_DEVICE:
      return 'unavailable';
    default:
      return 'cuda';
  }
}
