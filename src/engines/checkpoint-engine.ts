/**
 * The checkpoint engine interface: one contract behind which CRIU (with CUDA checkpointing), Cedana and the
 * kubelet ContainerCheckpoint API can sit. Agents and the planner only ever talk to this interface.
 *
 * Conventions every engine follows:
 *
 * - **Results, not exceptions.** Every method resolves to an {@link EngineResult}: `ok` with a value, or a
 *   failure tagged `retryable` (the same request may succeed if tried again, possibly on another target) or
 *   `fatal` (it will not, whatever the target), with a stable {@link EngineErrorCode}, a message that says what
 *   failed and what to do, and the underlying `cause`. Only programming errors throw.
 * - **Deadlines.** Every call carries an absolute deadline (ms since the Unix epoch, `Date.now()` scale). A call
 *   that cannot finish before it refuses up front (`DEADLINE_TOO_CLOSE`, nothing touched); work still running
 *   when it passes is aborted (`DEADLINE_EXCEEDED`). An optional `AbortSignal` aborts the same way (`ABORTED`).
 * - **The task survives a failed checkpoint.** A checkpoint that fails leaves the task running on the source
 *   where the engine can arrange it, and the failure says what the engine *verified* about the task afterwards
 *   ({@link TaskState}), never what it assumed.
 * - **Images.** A checkpoint writes its image to a directory, or streams it to an {@link ImageSink} while it is
 *   being written (no store-then-copy); the receiving side of the same engine turns that stream back into a
 *   directory ({@link CheckpointEngine.receive}), and {@link CheckpointEngine.restore} reads from a directory.
 *   The byte format on the stream is the engine's own.
 * - **Hooks.** Work that must wrap the dump and the restore of some tasks — the CUDA driver's
 *   lock/checkpoint before the dump and restore/unlock after it, for a GPU process — plugs in as
 *   {@link EngineHook}s, so no engine needs to know about GPUs.
 */
import type { Duplex } from 'node:stream';

/** Absolute time in milliseconds since the Unix epoch (the `Date.now()` scale). */
export type EpochMs = number;

/**
 * HTTP endpoints of a task that cooperates with its checkpoints (as serving engines expose them: SGLang's
 * release/resume_memory_occupation, vLLM's sleep/wake_up). spotwatch POSTs `prepareUrl` before the checkpoint
 * (the task stops its work at a step boundary and may release what it can get back on its own — allocator caches,
 * weights it can reload from local disk — so fewer bytes move) and `resumeUrl` once the task runs again: on the
 * target after the restore, or on the source when the checkpoint did not happen.
 */
export interface TaskControl {
  prepareUrl?: string;
  resumeUrl?: string;
  /**
   * Bytes the task gives back on prepare and takes back on resume (e.g. its weights): they do not travel, so size
   * and time estimates leave them out, and the time to reload them is counted instead.
   */
  releasableBytes?: number;
  /**
   * Pre-copy with the task's help: before the checkpoint, while the task keeps working, spotwatch POSTs
   * `{"event":"stage","directory",…}` here; the task writes state that will not change any more (a KV cache's filled
   * prefix, a snapshot plus the journal it keeps from then on) as files into `directory`, and spotwatch sends them
   * to the target ahead of the freeze. Prepare then names the staged directory (the task may release what it
   * staged), resume names where the files are on the node the task runs on.
   */
  stageUrl?: string;
  /** Bytes the task writes when it stages (they travel before the freeze: counted at the stream rate, not as downtime). */
  stagedBytes?: number;
}

/** Bytes a checkpoint leaves out because the task releases them on prepare (0 without a prepare endpoint). */
export function releasedOnPrepare(control: TaskControl | undefined): number {
  return control?.prepareUrl ? Math.max(0, control.releasableBytes ?? 0) : 0;
}

/** The task to checkpoint: a process tree rooted at `pid`, or a container (engines say which kinds they take). */
export type TaskRef =
  | {
      kind: 'process';
      /** Root of the process tree; its whole tree (threads and descendants) is checkpointed together. */
      pid: number;
      /** spotwatch's task id, for logs. */
      id?: string;
      /** The task's own control endpoints, when it cooperates with its checkpoints (task-control-hook.ts). */
      control?: TaskControl;
    }
  | {
      kind: 'container';
      /** Container runtime or API that owns it: `containerd`, `cri-o`, `kubelet`, … */
      runtime: string;
      containerId: string;
      /** For engines that go through Kubernetes. */
      pod?: { namespace: string; name: string; container: string };
      id?: string;
    };

/**
 * Stable failure codes, for logs, metrics and the planner's decisions. Never renamed once shipped.
 */
export type EngineErrorCode =
  /** The engine cannot run here: binary missing or too old, kernel lacks a feature, daemon unreachable. */
  | 'ENGINE_UNAVAILABLE'
  /** The engine needs privileges it does not have (CRIU needs root / CAP_CHECKPOINT_RESTORE). */
  | 'PERMISSION_DENIED'
  /** The request itself is wrong (bad path, unknown option, task kind the engine does not take). */
  | 'INVALID_REQUEST'
  /** The task does not exist (any more). */
  | 'TASK_NOT_FOUND'
  /** The task holds something this engine cannot checkpoint (a terminal, an external socket, a device …). */
  | 'TASK_UNSUPPORTED'
  /** Refused before starting: the work cannot finish before the deadline. Nothing was touched. */
  | 'DEADLINE_TOO_CLOSE'
  /** Aborted because the deadline passed while the work was running. */
  | 'DEADLINE_EXCEEDED'
  /** Aborted through the caller's `AbortSignal`. */
  | 'ABORTED'
  /** The checkpoint failed for another reason (see the message and the engine's log). */
  | 'CHECKPOINT_FAILED'
  /** The restore failed for another reason (see the message and the engine's log). */
  | 'RESTORE_FAILED'
  /** The target cannot host this task: its pid is taken, a file it had open is missing or differs, a port is busy. */
  | 'RESTORE_CONFLICT'
  /** The image is incomplete, corrupt or not this engine's. */
  | 'IMAGE_INVALID'
  /** The image stream between source and target broke, or the peer reported an error. */
  | 'TRANSPORT_FAILED'
  /** A hook (e.g. the CUDA checkpoint) failed. */
  | 'HOOK_FAILED'
  /** A bug or an unexpected condition in the engine itself. */
  | 'INTERNAL';

/**
 * What an engine verified about the task on the source after a call:
 * `running` (alive and executing), `stopped` (alive but stopped, e.g. SIGSTOP), `gone` (no longer exists or
 * a zombie), `unknown` (could not tell, e.g. a container engine that lost its daemon).
 */
export type TaskState = 'running' | 'stopped' | 'gone' | 'unknown';

export interface EngineOk<T> {
  status: 'ok';
  value: T;
  /** Wall time of the call. */
  durationMs: number;
}

export interface EngineFailure {
  /** `retryable`: the same request may succeed when tried again (maybe on another target). `fatal`: it will not. */
  status: 'retryable' | 'fatal';
  code: EngineErrorCode;
  /** One or two sentences: what failed, the engine's own reason, and what to do. */
  message: string;
  cause?: unknown;
  /** For checkpoints: the state of the task on the source after the failure, as verified by the engine. */
  taskState?: TaskState;
  /** The engine's log for this call, where it keeps one. */
  logPath?: string;
  /**
   * For restores: false when the image cannot be restored anywhere else (post-copy from the source: its memory
   * stayed there, and the source lets the task run again). Absent: the image is whole.
   */
  imageWhole?: false;
  durationMs: number;
}

export type EngineResult<T> = EngineOk<T> | EngineFailure;

/** Options every call takes. */
export interface CallOptions {
  /** Absolute deadline (ms since the epoch). Work that would pass it is refused or aborted. */
  deadline: EpochMs;
  /** Aborts the call (code `ABORTED`). */
  signal?: AbortSignal;
}

/** What an engine can do on this node. */
export interface EngineCapabilities {
  /** Engine name: `criu`, `cedana`, `kubelet`. */
  engine: string;
  /** The engine's own version (e.g. CRIU's), when it can tell. */
  version?: string;
  /** Whether checkpoint/restore can run here at all; `reason` says why not. */
  available: boolean;
  reason?: string;
  /** Task kinds the engine takes. */
  taskKinds: TaskRef['kind'][];
  /** `checkpoint` can stream the image to an {@link ImageSink} while it is being written. */
  streaming: boolean;
  /** `checkpoint` can leave the task running (a snapshot). */
  leaveRunning: boolean;
  /** Established TCP connections can be carried (only meaningful where the address moves with the task). */
  tcpEstablished: boolean;
  /** Names of the installed hooks (e.g. `cuda`). */
  hooks: string[];
  /** Engine-specific facts worth a log line at start (CRIU: its path, whether its kernel-feature cache is kept). */
  details?: Record<string, string>;
}

/** How big a checkpoint of a task will be, from the kernel's own accounting. */
export interface SizeEstimate {
  /** Host memory the image will carry (private and shared anonymous pages, swapped ones included). */
  memoryBytes: number;
  /** Device memory that hooks move into host memory before the dump (0 without a GPU hook). */
  gpuMemoryBytes: number;
  /** Estimated image size: memory, GPU memory and the engine's metadata. */
  imageBytes: number;
  /** Resident memory of the tree, for comparison (`Rss`). */
  rssBytes: number;
  /** Processes and threads in the tree. */
  processes: number;
  threads: number;
  /** Where the numbers come from, e.g. `smaps_rollup`. */
  basis: string;
}

/** Receives an image stream. The engine opens it once it is ready to stream and owns it afterwards. */
export interface ImageSink {
  /**
   * Opens the (authenticated) connection to the receiving side, which must hand it to the same engine's
   * {@link CheckpointEngine.receive}. This is the seam where agent-to-agent authentication and TLS live.
   */
  open(signal: AbortSignal): Promise<Duplex>;
  /** Where it goes, for logs and messages (e.g. `node-b 10.0.0.7:7443`). */
  describe: string;
}

/** Where a checkpoint goes. */
export type ImageDestination =
  /** The whole image is written into this directory (which must exist and be empty or absent). */
  | { kind: 'directory'; path: string }
  /**
   * The image streams to `sink` while it is written. `localDir` holds what the engine keeps on the source: its
   * log and small metadata, never the bulk of the image.
   */
  | { kind: 'stream'; sink: ImageSink; localDir: string };

/** A phase of a checkpoint or restore, for progress and metrics. */
export type EnginePhase = 'prepare' | 'hooks' | 'freeze' | 'dump' | 'transfer' | 'commit' | 'receive' | 'restore' | 'verify';

export interface ProgressEvent {
  phase: EnginePhase;
  /** Image bytes written or sent so far. */
  bytes: number;
  /** The estimate of the total, when known. */
  estimatedBytes?: number;
}

export interface CheckpointRequest extends CallOptions {
  task: TaskRef;
  /** Names the engine's logs and image metadata; one per migration attempt. */
  migrationId: string;
  destination: ImageDestination;
  /**
   * Keep the task running after the checkpoint (a snapshot, e.g. checkpoint-to-storage while it keeps working).
   * Default `false`: once the image is complete (and, for a stream, confirmed by the receiver) the task is
   * stopped for good, so it never runs in two places.
   */
  leaveRunning?: boolean;
  /** Carry established TCP connections (only where the task's address moves with it). Default: engine's. */
  tcpEstablished?: boolean;
  /**
   * Where what the task staged for this migration lies on this node, when the target holds a copy of it
   * ({@link TaskControl.stageUrl}); handed to the hooks, never written into the image.
   */
  stagedDirectory?: string;
  /**
   * `false`: no post-copy for this checkpoint, even where the engine offers it — e.g. because pulling the task's
   * memory after the freeze would not end well before the deadline, when the source goes and takes the memory with
   * it. Default: the engine's choice.
   */
  postCopy?: boolean;
  onProgress?: (event: ProgressEvent) => void;
}

export interface CheckpointResult {
  /** Where the image is: the directory, or the sink's description for a stream. */
  location: string;
  /** Image bytes written or sent (pages and metadata). */
  imageBytes: number;
  /**
   * When the task stopped doing its work on the source (downtime starts here), ms since the epoch: the first
   * hook that runs before the dump (e.g. the CUDA lock) or, without one, the freeze of the dump itself.
   */
  frozenAt: EpochMs;
  /** The task's state after the checkpoint: `gone`, or `running` with `leaveRunning`. Verified. */
  taskState: TaskState;
  /** Per-phase durations in ms (engine specific keys, e.g. `freeze`, `dump`, `transfer`, `commit`). */
  phases: Record<string, number>;
  /** The engine's log of the dump, where it keeps one. */
  logPath?: string;
  /**
   * How the image's bulk travelled, in words (engine specific), for logs and the migration record: e.g. CRIU's
   * `directory`, `relay` (both agents move the pages), `direct channel (native pump)`.
   */
  dataPath?: string;
  /**
   * Post-copy from the source: the checkpoint returns once the target has everything but the task's memory (the
   * tree stays frozen here), and the target restores at once and pulls the memory. This settles when the last page
   * has left (`ok`: the tree is then killed here) or when that failed — the engine then lets the tree run here again
   * (`taskState`), since the target's copy cannot go on without its memory. Absent: everything moved in the freeze.
   */
  pagesSettled?: Promise<{ ok: true; ms: number; bytes: number } | { ok: false; ms: number; message: string; taskState: TaskState }>;
}

export interface ReceiveRequest extends CallOptions {
  /** The connection an {@link ImageSink} opened on the source, already authenticated by the caller. */
  connection: Duplex;
  /** Directory the image is written into (must exist and be empty or absent). */
  directory: string;
  /** Expected migration id; the stream is refused when the source announces another one. */
  migrationId?: string;
  onProgress?: (event: ProgressEvent) => void;
  /**
   * Called once the source has announced which migration the stream carries, before any of the image arrives: the
   * caller can fetch what it needs to restore it while the image is still on its way (the restore is downtime).
   */
  onHello?: (migrationId: string) => void;
}

export interface ReceivedImage {
  directory: string;
  migrationId: string;
  imageBytes: number;
  files: number;
  /**
   * The source committed the hand-over (an `ok` result always means it did). `true`: the task is stopped there
   * for good and this image is now the task — restore it. `false`: a snapshot (`leaveRunning`); the task still
   * runs on the source, so restoring it here would run it twice.
   */
  sourceStopped: boolean;
}

export interface RestoreRequest extends CallOptions {
  migrationId: string;
  /** The image to restore. */
  source: { kind: 'directory'; path: string };
  /** Where the files the task staged for this migration lie on this node, if it staged any (handed to the hooks). */
  stagedDirectory?: string;
  onProgress?: (event: ProgressEvent) => void;
}

export interface RestoreResult {
  /** The restored task (for a process tree, its root pid on this node). */
  task: TaskRef;
  /** Per-phase durations in ms. */
  phases: Record<string, number>;
  logPath?: string;
  /**
   * A lazy (post-copy) restore returns once the task runs, before all of its memory is in place. This settles when
   * the rest has arrived (`ok`), or when filling it failed — then the engine has killed the task, which would
   * otherwise read zeros, and the image is still whole. The image must stay until it settles. Absent: eager.
   */
  memorySettled?: Promise<{ ok: true; ms: number } | { ok: false; ms: number; message: string }>;
  /**
   * The memory came from the source after the task ran here (post-copy from the source): when filling it fails the
   * image is not whole (the source kept the pages, and lets the task run there again), so it cannot go elsewhere.
   */
  postCopy?: boolean;
}

/** Context handed to hooks. */
export interface HookContext {
  task: TaskRef;
  migrationId: string;
  deadline: EpochMs;
  signal: AbortSignal;
  /** Every process of the task's tree (root first), where the engine knows them. */
  pids: number[];
  /** The request's {@link CheckpointRequest.stagedDirectory} / {@link RestoreRequest.stagedDirectory}. */
  stagedDirectory?: string;
}

/**
 * Work that wraps the dump and the restore of a task, e.g. the CUDA driver's checkpoint API for a GPU process:
 * `beforeCheckpoint` = cuCheckpointProcessLock + cuCheckpointProcessCheckpoint (device memory moves into host
 * memory, where the dump takes it), `afterCheckpoint` when the task keeps running on the source =
 * cuCheckpointProcessRestore + cuCheckpointProcessUnlock, `afterRestore` on the target = the same on the new pid.
 * A hook that throws fails the call with `HOOK_FAILED`; hooks run in order, and their `after*` in reverse.
 */
export interface EngineHook {
  readonly name: string;
  /**
   * The hook needs the task's whole memory in place when its `afterRestore` runs (the CUDA restore copies host
   * memory to the device): an engine that can restore lazily (post-copy) restores eagerly the tasks it applied to.
   */
  readonly eagerRestore?: boolean;
  /** Whether this hook applies to the task (e.g. the process holds a CUDA context). Default: always. */
  appliesTo?(task: TaskRef, pids: number[]): Promise<boolean>;
  /** Extra bytes (e.g. device memory) this hook adds to the image. */
  estimate?(task: TaskRef, pids: number[]): Promise<{ gpuMemoryBytes: number }>;
  beforeCheckpoint?(ctx: HookContext): Promise<void>;
  /**
   * After the dump, whatever its outcome. `taskState` says where the source task stands: when it is `running`
   * (failed dump, or `leaveRunning`), undo what `beforeCheckpoint` did.
   */
  afterCheckpoint?(ctx: HookContext & { ok: boolean; taskState: TaskState }): Promise<void>;
  /** Before the restore, with the image directory; the task's pid on this node is not known yet (`pids` is empty). */
  beforeRestore?(ctx: HookContext & { directory: string }): Promise<void>;
  /** After the restore, with the restored task and its tree: e.g. cuCheckpointProcessRestore + Unlock. */
  afterRestore?(ctx: HookContext): Promise<void>;
}

/**
 * A hook may throw an error that carries a more precise code and status than `HOOK_FAILED` / `retryable`
 * (e.g. `ENGINE_UNAVAILABLE`, fatal, when there is no GPU driver on this node); engines use them as given.
 */
export interface HookErrorDetails {
  engineCode?: EngineErrorCode;
  engineStatus?: 'retryable' | 'fatal';
}

/** One checkpoint engine. Implementations: `CriuEngine` (src/engines/criu); Cedana and kubelet later. */
export interface CheckpointEngine {
  readonly name: string;
  /** What the engine can do on this node, checked for real (binary, version, kernel). */
  capabilities(opts: CallOptions): Promise<EngineResult<EngineCapabilities>>;
  /** Size of a checkpoint of `task`, from live accounting; the planner turns it into time with measured rates. */
  estimate(task: TaskRef, opts: CallOptions): Promise<EngineResult<SizeEstimate>>;
  /** Checkpoints `task` into `destination`. On failure the task is left running where the engine can. */
  checkpoint(req: CheckpointRequest): Promise<EngineResult<CheckpointResult>>;
  /** Target side of a streamed checkpoint: writes the stream into a directory, ready for `restore`. */
  receive(req: ReceiveRequest): Promise<EngineResult<ReceivedImage>>;
  /** Restores the task from an image directory on this node; `ok` only once it is verified running. */
  restore(req: RestoreRequest): Promise<EngineResult<RestoreResult>>;
}

/** Milliseconds left until `deadline` (negative once it has passed). */
export function remainingMs(deadline: EpochMs, now: number = Date.now()): number {
  return deadline - now;
}

export function engineOk<T>(value: T, startedAt: number): EngineOk<T> {
  return { status: 'ok', value, durationMs: Date.now() - startedAt };
}

export function engineFailure(
  status: EngineFailure['status'],
  code: EngineErrorCode,
  message: string,
  startedAt: number,
  extra: Partial<Pick<EngineFailure, 'cause' | 'taskState' | 'logPath'>> = {},
): EngineFailure {
  const f: EngineFailure = { status, code, message, durationMs: Date.now() - startedAt };
  if (extra.cause !== undefined) f.cause = extra.cause;
  if (extra.taskState !== undefined) f.taskState = extra.taskState;
  if (extra.logPath !== undefined) f.logPath = extra.logPath;
  return f;
}

export function isEngineOk<T>(r: EngineResult<T>): r is EngineOk<T> {
  return r.status === 'ok';
}
