/**
 * The CRIU engine: checkpoint and restore of a process tree with CRIU 4.x (see scripts/install-criu.sh).
 *
 * - **checkpoint** = `criu dump -t PID` of the whole tree, with what an inference server needs: open and
 *   unlinked files (`--link-remap`), file locks, unix sockets whose peer is outside the tree (`--ext-unix-sk`),
 *   established TCP as an option (`--tcp-established`, nftables network lock), `--shell-job` only when the tree
 *   is tied to a terminal or to a session outside it; cgroups are left alone (`--manage-cgroups=ignore`). The
 *   dump runs with `--leave-stopped`: the engine stops the task for good only once the image is complete (for a
 *   stream: once the target has ACKed the whole image), and resumes it (SIGCONT) when anything fails before —
 *   so a failed checkpoint or transfer leaves the task running on the source, verified with `kill -0` and
 *   /proc/PID/stat, and said in the result.
 * - **streaming**: the dump's memory pages go through CRIU's page-server protocol over an inherited socketpair,
 *   relayed by the agents on the image-stream connection (image-stream.ts explains why); the small non-page
 *   images follow on the same connection. `receive` runs `criu page-server` on the target.
 * - **restore** = `criu restore --restore-detached --pidfile`, after checking the image and that its pids are
 *   free here; `ok` only once the restored root is verified running.
 * - Every run keeps CRIU's log in the migration's image directory (`dump.log`, `page-server.log`,
 *   `restore.log`), and failures are classified from it into the interface's stable codes (criu-log.ts).
 * - Deadlines: work that the configured {@link CriuRates} say cannot finish in time is refused untouched; a
 *   CRIU still running at the deadline is killed. Killing `criu dump` while its parasite code runs inside the
 *   task can leave the task damaged — at the deadline the node is about to vanish anyway, and the result says
 *   what state the task was left in.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { Socket } from 'node:net';
import { release } from 'node:os';
import { join } from 'node:path';
import { releasedOnPrepare } from '../checkpoint-engine.js';
import type { TaskControl,
  CallOptions,
  CheckpointEngine,
  CheckpointRequest,
  CheckpointResult,
  EngineCapabilities,
  EngineErrorCode,
  EngineFailure,
  EngineHook,
  EngineResult,
  HookContext,
  HookErrorDetails,
  ProgressEvent,
  ReceiveRequest,
  ReceivedImage,
  RestoreRequest,
  RestoreResult,
  SizeEstimate,
  TaskRef,
  TaskState,
} from '../checkpoint-engine.js';
import { engineFailure, engineOk } from '../checkpoint-engine.js';
import { locateCriu } from './criu-binary.js';
import { prepareKerndatCache } from './kerndat-cache.js';
import { POST_COPY_PIPE_MAX_BYTES, isPidNamespaceRoot, postCopyBlocker, raisePipeMaxForPostCopy, seizedAtFromLog } from './post-copy.js';
import type { KerndatCacheMode, KerndatCacheState } from './kerndat-cache.js';
import type { CriuBinary } from './criu-binary.js';
import { buildDumpArgs, buildLazyPagesArgs, buildPageServerArgs, buildRestoreArgs } from './criu-command.js';
import type { CgroupMode, CriuTaskOptions } from './criu-command.js';
import { classifyCriuFailure, describeCriuFailure, lazyPagesInPagemap, parseDumpStats, parseRestoreStats } from './criu-log.js';
import type { CriuAction } from './criu-log.js';
import { prepareCriu, startCriu, statusFdOf } from './criu-process.js';
import type { PreparedCriu } from './criu-process.js';
import { locateExecHolder } from './exec-holder.js';
import { locatePagePump, pagePumpMode, startNativePagePump } from './native-page-pump.js';
import type { CriuExit, CriuRun } from './criu-process.js';
import { ImageStreamError, ImageStreamReceiver, ImageStreamSender, pumpPages, sendPageChannelFrame } from './image-stream.js';
import { PAGE_CHANNEL_WAIT_MS, isPlainSocket, takePageChannel } from './page-channel.js';
import type { StreamFile } from './image-stream.js';
import { estimateTree, isDying, needsShellJob, pidExists, processTree, readProcStat, signalAll, taskState, waitDead, waitGone } from './proc.js';

/** Name of the engine's manifest in every image directory. */
export const MANIFEST_FILE = 'spotwatch-image.json';

/** Throughput assumptions used to refuse work that cannot meet its deadline. */
export interface CriuRates {
  /** Dump (and stream) throughput, bytes per second. */
  checkpointBytesPerSec: number;
  /** Restore throughput, bytes per second. */
  restoreBytesPerSec: number;
  /** Fixed cost of one CRIU run (start, freeze, metadata), ms. */
  fixedMs: number;
}

/** Conservative defaults; the planner passes rates measured on earlier migrations. */
export const DEFAULT_CRIU_RATES: CriuRates = { checkpointBytesPerSec: 250e6, restoreBytesPerSec: 250e6, fixedMs: 250 };

export interface CriuEngineOptions {
  /** CRIU executable; default: `SPOTWATCH_CRIU`, then `.criu/bin/criu`, then `criu` on PATH (version ≥ 4). */
  criuPath?: string;
  /** `--shell-job`: `auto` (default) uses it only when the tree has a terminal or a session led from outside. */
  shellJob?: 'auto' | boolean;
  /** Carry established TCP connections (default false; only where the task's address moves with it). */
  tcpEstablished?: boolean;
  /** Network lock for `--tcp-established` (default `nftables`: no iptables binary needed). */
  networkLock?: CriuTaskOptions['networkLock'];
  /** Allow unix sockets connected outside the tree (default true). */
  extUnixSk?: boolean;
  /** Carry file locks (default true). */
  fileLocks?: boolean;
  /** Carry unlinked-but-open files through link remaps (default true). */
  linkRemap?: boolean;
  /** `--manage-cgroups` (default `ignore`: cgroups are the target's business). */
  manageCgroups?: CgroupMode;
  /** CRIU log verbosity 0–4 (default 4: logs are kept per migration and explain failures). */
  logLevel?: number;
  hooks?: EngineHook[];
  rates?: Partial<CriuRates>;
  /** Appended to every `criu dump` / `criu restore` (experiments, tests). */
  extraDumpArgs?: string[];
  extraRestoreArgs?: string[];
  /**
   * Send memory pages over a second authenticated connection handed to CRIU itself, when the image stream runs on
   * plain TCP (page-channel.ts); otherwise, or when false, the agents relay them. Default true.
   */
  directPages?: boolean;
  /**
   * Post-copy restore: the task runs again as soon as CRIU has rebuilt it, and its memory follows from the received
   * image (`criu lazy-pages`: faults served at once, the rest pushed in the background), so downtime ends a stage
   * sooner. Tasks whose hooks need all memory at once (the CUDA restore: {@link EngineHook.eagerRestore}) are still
   * restored eagerly. Default false.
   */
  lazyRestore?: boolean;
  /**
   * Post-copy from the source, offered on streamed checkpoints: `criu dump --lazy-pages` writes everything but the
   * tree's memory, the target restores at once and pulls the memory over the page channel while the task runs. The
   * freeze then lasts as long as the dump of everything else. Used when the target takes it, the stream is plain TCP
   * with a page channel, no hook needs an eager restore, and CRIU can size its pipes (CAP_SYS_RESOURCE, or
   * `fs.pipe-max-size` ≥ 4 MiB: {@link postCopyBlocker}). Default false.
   */
  postCopy?: boolean;
  /** As a target: take a source's post-copy offer (default true). */
  acceptPostCopy?: boolean;
  /**
   * Let CRIU stop tasks with hardware breakpoints — `criu dump` at the end of its parasite's work, `criu restore` at
   * the end of its restorer (CRIU's default) — rather than by stepping through their last few syscalls. Default
   * false: on the VMs measured here the first debug-register write after a while traps to the hypervisor and cost
   * 15–20 ms, inside the freeze when the dump pays it, inside the restore when the dump does not (post-copy of a 64 MiB
   * task: dump 36–45 ms with, 24–26 without; restore 14–17 ms after a dump that paid, 26–33 after one that did not);
   * stepping costs well under a millisecond. CRIU's switch for it is its test knob `CRIU_FAULT=130` ("no
   * breakpoints"), which changes nothing else.
   */
  breakpoints?: boolean;
  /**
   * `auto` (default): where `/run` is not a tmpfs, CRIU cannot keep its kernel-feature cache and probes at every run
   * (~35 ms, inside the downtime for the restore and its lazy-pages daemon); the engine then provides the cache
   * (kerndat-cache.ts) when it first locates CRIU. `off`: leave it to CRIU.
   */
  kerndatCache?: KerndatCacheMode;
  /** How long to wait for a stopped task's pids (or a restore target's pids) to be released. Default 2000 ms. */
  releaseTimeoutMs?: number;
}

/** A running `criu lazy-pages` (post-copy restore). */
/**
 * A received post-copy image's way back to its source: its lazy-pages daemon, started on the page channel as soon as
 * the image files were in (before the COMMIT, off the critical path), and the stream to confirm the fill on.
 */
interface PostCopySource {
  daemon: Promise<LazyPagesDaemon | { error: string; logPath: string }>;
  stream: ImageStreamReceiver;
  timer: NodeJS.Timeout;
}

interface LazyPagesDaemon {
  run: CriuRun;
  logPath: string;
  startedAt: number;
}

/** What the engine records next to the image, so the restore uses the options the dump used. */
export interface CriuImageManifest {
  format: 1;
  engine: 'criu';
  criuVersion: string;
  migrationId: string;
  createdAt: string;
  taskId?: string;
  /** The task's control endpoints (task-control-hook.ts): the restore tells the task to resume through them. */
  taskControl?: TaskControl;
  rootPid: number;
  /** Every process of the dumped tree, root first. */
  pids: number[];
  options: CriuTaskOptions;
  estimate?: SizeEstimate;
  /** Page bytes sent through the page server (stream) or written (directory). */
  pageBytes: number;
  streamed: boolean;
  /** Names of the hooks that applied to the task at the checkpoint (e.g. `cuda`); only these run at its restore. Absent (older images): all do. */
  hooks?: string[];
  /** The tree's root is the init of a pid namespace of its own: its restore gets a new one, so its pids need not be free. */
  pidNamespace?: boolean;
  /** Post-copy from the source: the image holds everything but the tree's memory, which the restore pulls from the source. */
  postCopy?: boolean;
}

/** CRIU's fault-injection id FI_NO_BREAKPOINTS (criu/include/fault-injection.h): stop tasks without hw breakpoints. */
const CRIU_FI_NO_BREAKPOINTS = 130;

/** How long a received post-copy image's page channel waits for its restore before it is closed. */
const POST_COPY_CLAIM_MS = 60_000;

/** Below this much time left, no call starts at all. */
const MIN_CALL_MS = 50;
/**
 * How long a dump whose page stream broke gets to fail by itself before it is killed. CRIU notices the broken socket,
 * cures the task of its parasite and lets it run on; killed in the middle of a dump it can leave the task dead.
 */
const DUMP_ABORT_GRACE_MS = 5_000;

class Aborted extends Error {
  constructor(readonly reason: 'deadline' | 'abort') {
    super(reason === 'deadline' ? 'deadline passed' : 'aborted');
  }
}

/** Per-call deadline and abort handling: one AbortController that fires at the deadline or on the caller's signal. */
class CallGuard {
  readonly controller = new AbortController();
  reason: 'deadline' | 'abort' | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly onAbort = (): void => this.fire('abort');

  constructor(
    readonly deadline: number,
    private readonly external?: AbortSignal,
  ) {
    this.timer = setTimeout(() => this.fire('deadline'), Math.max(0, deadline - Date.now()));
    external?.addEventListener('abort', this.onAbort, { once: true });
    if (external?.aborted) this.fire('abort');
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private fire(reason: 'deadline' | 'abort'): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller.abort(new Aborted(reason));
  }

  /** Races `p` against the guard. */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.reason) return Promise.reject(new Aborted(this.reason));
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(new Aborted(this.reason ?? 'abort'));
      this.signal.addEventListener('abort', onAbort, { once: true });
      p.then(
        (v) => {
          this.signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e: unknown) => {
          this.signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.external?.removeEventListener('abort', this.onAbort);
  }
}

function abortedFailure(reason: 'deadline' | 'abort', what: string, started: number, extra: Partial<EngineFailure> = {}): EngineFailure {
  return reason === 'deadline'
    ? engineFailure('fatal', 'DEADLINE_EXCEEDED', `${what} aborted: the deadline passed`, started, extra)
    : engineFailure('fatal', 'ABORTED', `${what} aborted by the caller`, started, extra);
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return '';
  }
}

/** A small file (a pid file, CRIU's stats) read in the task's downtime: synchronously; empty when missing. */
function readTextSync(path: string): string {
  return readBytesSync(path).toString('utf8');
}

function readBytesSync(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch {
    return Buffer.alloc(0);
  }
}

async function isEmptyOrAbsent(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Regular files of a directory, sorted, with sizes. */
async function listFiles(dir: string): Promise<StreamFile[]> {
  // Synchronous on purpose: an image directory holds a few dozen files, and this runs inside the task's downtime,
  // where one thread-pool round trip per file cost several ms.
  const out: StreamFile[] = [];
  for (const name of readdirSync(dir).sort()) {
    const st = statSync(join(dir, name), { throwIfNoEntry: false });
    if (st?.isFile()) out.push({ name, size: st.size });
  }
  return out;
}

/** The files every CRIU image has. */
const IMAGE_CORE_FILES = ['inventory.img', 'pstree.img'];

/** Whether a received file list holds {@link IMAGE_CORE_FILES}. */
function hasImageCore(files: StreamFile[]): boolean {
  return IMAGE_CORE_FILES.every((name) => files.some((f) => f.name === name));
}

/** First free log name: `restore.log`, `restore.2.log`, … (a retry in the same directory keeps the earlier log). */
function freeLogName(dir: string, base: string): string {
  for (let i = 1; ; i++) {
    const name = i === 1 ? `${base}.log` : `${base}.${i}.log`;
    if (!existsSync(join(dir, name))) return name;
  }
}

/** Whether the running kernel is at least `major.minor`. */
function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  if (!m) return false;
  const [ma, mi] = [Number(m[1]), Number(m[2])];
  return ma > major || (ma === major && mi >= minor);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class CriuEngine implements CheckpointEngine {
  readonly name = 'criu';
  private readonly opts: CriuEngineOptions;
  private readonly rates: CriuRates;
  /** Received post-copy images' ways back to their sources (lazy-pages daemon, stream), by migration id, until their restore takes them. */
  private readonly postCopySources = new Map<string, PostCopySource>();
  /** With post-copy on: what its node setup did (known once CRIU has been located). */
  private postCopySetup: string | undefined;
  /** What became of CRIU's kernel-feature cache (known once CRIU has been located). */
  kerndat: KerndatCacheState | undefined;
  private located: Promise<{ ok: true; binary: CriuBinary } | { ok: false; reason: string }> | undefined;
  /** The exec holder (exec-holder.ts), located once; undefined where it cannot run. */
  private holder: Promise<string | undefined> | undefined;
  /** Restores started ahead of their image (held CRIU processes, exec-holder.ts), by migration id, until claimed. */
  private readonly preparedRestores = new Map<string, { prepared: PreparedCriu; timer: NodeJS.Timeout }>();
  private checked: Promise<{ ok: boolean; detail: string }> | undefined;

  constructor(opts: CriuEngineOptions = {}) {
    this.opts = opts;
    this.rates = { ...DEFAULT_CRIU_RATES, ...opts.rates };
  }

  private get hooks(): EngineHook[] {
    return this.opts.hooks ?? [];
  }

  private get logLevel(): number {
    return this.opts.logLevel ?? 4;
  }

  /** Environment for `criu dump` and `criu restore` ({@link CriuEngineOptions.breakpoints}). */
  private get criuEnv(): { env?: Record<string, string> } {
    return this.opts.breakpoints === true ? {} : { env: { CRIU_FAULT: String(CRIU_FI_NO_BREAKPOINTS) } };
  }

  private get releaseTimeoutMs(): number {
    return this.opts.releaseTimeoutMs ?? 2000;
  }

  /** The CRIU binary this engine runs (located once). */
  async binary(): Promise<{ ok: true; binary: CriuBinary } | { ok: false; reason: string }> {
    this.located ??= locateCriu(this.opts.criuPath ?? process.env.SPOTWATCH_CRIU).then(async (loc) => {
      if (!loc.ok) return loc;
      this.kerndat = await prepareKerndatCache(loc.binary, this.opts.kerndatCache ?? 'auto');
      // Turning post-copy on gives leave to let CRIU size its pipes as it must (post-copy.ts): a node-wide sysctl, only raised.
      if (this.opts.postCopy === true) {
        const raised = raisePipeMaxForPostCopy();
        this.postCopySetup = raised.changed ? `raised fs.pipe-max-size from ${raised.from} to ${POST_COPY_PIPE_MAX_BYTES}` : (raised.reason ?? 'ready');
      }
      return loc;
    });
    return this.located;
  }

  private execHolder(): Promise<string | undefined> {
    this.holder ??= locateExecHolder().catch(() => undefined);
    return this.holder;
  }

  /**
   * Starts the process of `migrationId`'s restore now (a held CRIU: exec-holder.ts), so that the restore itself,
   * inside the task's downtime, costs no fork of this agent. Unclaimed within {@link POST_COPY_CLAIM_MS}, it ends.
   */
  private prepareRestore(binary: CriuBinary, holder: string | undefined, migrationId: string): void {
    if (!holder) return;
    this.dropPreparedRestore(migrationId);
    const prepared = prepareCriu(binary, holder, { ...this.criuEnv });
    const timer = setTimeout(() => this.dropPreparedRestore(migrationId), POST_COPY_CLAIM_MS);
    timer.unref();
    this.preparedRestores.set(migrationId, { prepared, timer });
  }

  private claimPreparedRestore(migrationId: string): PreparedCriu | undefined {
    const kept = this.preparedRestores.get(migrationId);
    if (!kept) return undefined;
    clearTimeout(kept.timer);
    this.preparedRestores.delete(migrationId);
    return kept.prepared;
  }

  private dropPreparedRestore(migrationId: string): void {
    this.claimPreparedRestore(migrationId)?.cancel();
  }

  private taskOptions(shellJob: boolean, tcpEstablished?: boolean): CriuTaskOptions {
    return {
      shellJob,
      tcpEstablished: tcpEstablished ?? this.opts.tcpEstablished ?? false,
      extUnixSk: this.opts.extUnixSk ?? true,
      fileLocks: this.opts.fileLocks ?? true,
      manageCgroups: this.opts.manageCgroups ?? 'ignore',
      networkLock: this.opts.networkLock ?? 'nftables',
    };
  }

  /** Refuses a call whose deadline is (nearly) gone or whose signal already fired. */
  private precheck(opts: CallOptions, what: string, started: number): EngineFailure | undefined {
    if (!Number.isFinite(opts.deadline)) return engineFailure('fatal', 'INVALID_REQUEST', `${what}: deadline must be a finite epoch-ms number`, started);
    const left = opts.deadline - Date.now();
    if (left < MIN_CALL_MS) return engineFailure('fatal', 'DEADLINE_TOO_CLOSE', `${what} refused: ${Math.max(0, left)} ms left before the deadline`, started);
    if (opts.signal?.aborted) return engineFailure('fatal', 'ABORTED', `${what} aborted before it started`, started);
    return undefined;
  }

  private async criuOrFailure(started: number): Promise<CriuBinary | EngineFailure> {
    const loc = await this.binary();
    if (!loc.ok) return engineFailure('fatal', 'ENGINE_UNAVAILABLE', loc.reason, started);
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      return engineFailure('fatal', 'PERMISSION_DENIED', 'CRIU must run as root (or with CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE); this agent is not root', started);
    }
    return loc.binary;
  }

  async capabilities(opts: CallOptions): Promise<EngineResult<EngineCapabilities>> {
    const started = Date.now();
    const pre = this.precheck(opts, 'capabilities', started);
    if (pre) return pre;
    const caps: EngineCapabilities = {
      engine: this.name,
      available: false,
      taskKinds: ['process'],
      streaming: true,
      leaveRunning: true,
      tcpEstablished: true,
      hooks: this.hooks.map((h) => h.name),
    };
    const loc = await this.binary();
    if (!loc.ok) return engineOk({ ...caps, reason: loc.reason }, started);
    caps.version = loc.binary.version;
    const holder = await this.execHolder();
    caps.details = { execHolder: holder ?? 'none (criu is spawned directly)', criu: loc.binary.path, kerndatCache: this.kerndat ? `${this.kerndat.status}${this.kerndat.reason ? ` (${this.kerndat.reason})` : ''}` : 'unknown' };
    if (this.opts.postCopy === true) caps.details.postCopy = postCopyBlocker() ?? `available${this.postCopySetup && this.postCopySetup !== 'ready' ? ` (${this.postCopySetup})` : ''}`;
    if (loc.binary.major === 4 && loc.binary.minor < 2 && kernelAtLeast(6, 16)) {
      // Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix sockets; CRIU < 4.2 then fails on any inet socket.
      caps.tcpEstablished = false;
    }
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      return engineOk({ ...caps, reason: 'CRIU needs root; this agent is not root' }, started);
    }
    this.checked ??= (async () => {
      const run = startCriu(loc.binary, ['check'], { deadline: Math.min(opts.deadline, Date.now() + 30_000) });
      const exit = await run.done;
      const out = `${exit.stdout}\n${exit.stderr}`;
      if (exit.code === 0 && /Looks good/.test(out)) return { ok: true, detail: 'Looks good' };
      const f = classifyCriuFailure('check', '', exit.stderr, exit.code);
      return { ok: false, detail: `criu check failed: ${f.reason}` };
    })();
    const check = await this.checked;
    if (!check.ok) {
      this.checked = undefined; // try again next time
      return engineOk({ ...caps, reason: check.detail }, started);
    }
    return engineOk({ ...caps, available: true }, started);
  }

  async estimate(task: TaskRef, opts: CallOptions): Promise<EngineResult<SizeEstimate>> {
    const started = Date.now();
    const pre = this.precheck(opts, 'estimate', started);
    if (pre) return pre;
    if (task.kind !== 'process') return engineFailure('fatal', 'INVALID_REQUEST', `the criu engine takes process tasks, not ${task.kind}`, started);
    const est = await this.estimateWithHooks(task);
    if (!est) return engineFailure('fatal', 'TASK_NOT_FOUND', `process ${task.pid} does not exist`, started, { taskState: 'gone' });
    return engineOk(est, started);
  }

  private async estimateWithHooks(task: TaskRef & { kind: 'process' }): Promise<SizeEstimate | undefined> {
    const est = await estimateTree(task.pid);
    if (!est) return undefined;
    const pids = await processTree(task.pid);
    for (const h of this.hooks) {
      if (!h.estimate) continue;
      if (h.appliesTo && !(await h.appliesTo(task, pids))) continue;
      const g = await h.estimate(task, pids);
      est.gpuMemoryBytes += g.gpuMemoryBytes;
      est.imageBytes += g.gpuMemoryBytes;
    }
    // What the task releases on prepare (task-control-hook.ts) is not in the image.
    est.imageBytes = Math.max(0, est.imageBytes - releasedOnPrepare(task.control));
    return est;
  }

  /** Time a checkpoint of `bytes` is expected to take with the configured rates. */
  expectedCheckpointMs(bytes: number): number {
    return this.rates.fixedMs + (bytes / this.rates.checkpointBytesPerSec) * 1000;
  }

  expectedRestoreMs(bytes: number): number {
    return this.rates.fixedMs + (bytes / this.rates.restoreBytesPerSec) * 1000;
  }

  /** Resumes a tree that the dump left stopped (unless it was stopped before), then reports its verified state. */
  private async settleSource(root: number, pids: readonly number[], wasStopped: boolean): Promise<TaskState> {
    let st = await taskState(root);
    if (st === 'stopped' && !wasStopped) {
      signalAll(pids, 'SIGCONT');
      for (let i = 0; i < 20 && st === 'stopped'; i++) {
        await new Promise((r) => setTimeout(r, 5));
        st = await taskState(root);
      }
    }
    return st;
  }

  private async runHooks<K extends 'beforeCheckpoint' | 'beforeRestore'>(
    kind: K,
    hooks: EngineHook[],
    ctx: Parameters<NonNullable<EngineHook[K]>>[0],
    /** Where each hook's own duration goes (`hook.<name>` in ms), so the phases say which hook took the time. */
    phases?: Record<string, number>,
  ): Promise<{ ran: EngineHook[]; error?: { hook: string; err: unknown } }> {
    const ran: EngineHook[] = [];
    for (const h of hooks) {
      const fn = h[kind] as ((c: typeof ctx) => Promise<void>) | undefined;
      try {
        const t = Date.now();
        if (fn) await fn.call(h, ctx);
        if (fn && phases) phases[`hook.${h.name}`] = Date.now() - t;
        ran.push(h);
      } catch (err) {
        return { ran, error: { hook: h.name, err } };
      }
    }
    return { ran };
  }

  private async afterCheckpointHooks(ran: EngineHook[], ctx: HookContext, ok: boolean, state: TaskState): Promise<string | undefined> {
    const errors: string[] = [];
    for (const h of [...ran].reverse()) {
      try {
        await h.afterCheckpoint?.({ ...ctx, ok, taskState: state });
      } catch (err) {
        errors.push(`${h.name}: ${describe(err)}`);
      }
    }
    return errors.length ? errors.join('; ') : undefined;
  }

  async checkpoint(req: CheckpointRequest): Promise<EngineResult<CheckpointResult>> {
    const started = Date.now();
    const pre = this.precheck(req, 'checkpoint', started);
    if (pre) return pre;
    if (req.task.kind !== 'process') return engineFailure('fatal', 'INVALID_REQUEST', `the criu engine takes process tasks, not ${req.task.kind}`, started);
    const task = req.task;
    const criu = await this.criuOrFailure(started);
    if ('status' in criu) return criu;

    const root = await readProcStat(task.pid);
    if (!root || root.state === 'Z' || root.state === 'X') {
      return engineFailure('fatal', 'TASK_NOT_FOUND', `process ${task.pid} does not exist (or is a zombie)`, started, { taskState: 'gone' });
    }
    const wasStopped = root.state === 'T' || root.state === 't';
    const pids = await processTree(task.pid);
    const estimate = await this.estimateWithHooks(task);
    if (!estimate) return engineFailure('fatal', 'TASK_NOT_FOUND', `process ${task.pid} exited`, started, { taskState: 'gone' });
    const needMs = this.expectedCheckpointMs(estimate.imageBytes);
    const leftMs = req.deadline - Date.now();
    if (needMs > leftMs) {
      return engineFailure(
        'fatal',
        'DEADLINE_TOO_CLOSE',
        `checkpoint of ${task.pid} refused: ~${Math.round(estimate.imageBytes / 1048576)} MiB needs ~${Math.round(needMs)} ms, ${leftMs} ms left; the task was not touched`,
        started,
        { taskState: await taskState(task.pid) },
      );
    }

    const dest = req.destination;
    const imagesDir = dest.kind === 'directory' ? dest.path : dest.localDir;
    if (!(await isEmptyOrAbsent(imagesDir))) {
      return engineFailure('fatal', 'INVALID_REQUEST', `image directory ${imagesDir} is not empty; every migration needs its own`, started, { taskState: await taskState(task.pid) });
    }
    await mkdir(imagesDir, { recursive: true });
    const logPath = join(imagesDir, 'dump.log');
    const options = this.taskOptions(this.opts.shellJob === 'auto' || this.opts.shellJob === undefined ? needsShellJob(root, pids) : this.opts.shellJob, req.tcpEstablished);
    const progress = (e: ProgressEvent): void => {
      try {
        req.onProgress?.(e);
      } catch {
        // a progress listener never breaks a checkpoint
      }
    };

    const guard = new CallGuard(req.deadline, req.signal);
    const hookCtx: HookContext = { task, migrationId: req.migrationId, deadline: req.deadline, signal: guard.signal, pids, ...(req.stagedDirectory ? { stagedDirectory: req.stagedDirectory } : {}) };
    const phases: Record<string, number> = {};
    let sender: ImageStreamSender | undefined;
    /** The direct page channel (page-channel.ts): this agent pumps the dump's socketpair into it, unframed. */
    let channel: Socket | undefined;
    let direct = false;
    /** The target took post-copy: the dump serves the memory over the channel after the freeze (`--lazy-pages`). */
    let postCopy = false;
    /** A post-copy dump past its frozen part: it holds the tree until the target has every page (or fails). */
    let servingDump: CriuRun | undefined;
    let ran: EngineHook[] = [];

    // Every failure path goes through here: resume the task if we left it stopped, undo hooks, tell the peer.
    const fail = async (status: EngineFailure['status'], code: EngineErrorCode, message: string, cause?: unknown): Promise<EngineFailure> => {
      if (servingDump) {
        // The target never got the image: it drops the page channel (told below), CRIU's page server fails and
        // CRIU lets the tree run again; it is killed only if it has not ended after a grace period.
        sender?.abort({ code, status, message });
        channel?.destroy();
        const dump = servingDump;
        const kill = setTimeout(() => dump.kill('abort'), DUMP_ABORT_GRACE_MS);
        await dump.done;
        clearTimeout(kill);
      }
      const state = await this.settleSource(task.pid, pids, wasStopped);
      const hookErr = await this.afterCheckpointHooks(ran, hookCtx, false, state);
      const where = state === 'running' ? 'the task is still running on the source' : `the task is ${state} on the source`;
      const full = `${message}; ${where}${hookErr ? `; hooks failed to undo: ${hookErr}` : ''}`;
      sender?.abort({ code, status, message });
      channel?.destroy();
      const extra: Partial<EngineFailure> = { taskState: state, logPath };
      if (cause !== undefined) extra.cause = cause;
      return engineFailure(status, code, full, started, extra);
    };

    try {
      progress({ phase: 'prepare', bytes: 0, estimatedBytes: estimate.imageBytes });
      phases.prepare = Date.now() - started;

      const hooks: EngineHook[] = [];
      for (const h of this.hooks) if (!h.appliesTo || (await h.appliesTo(task, pids))) hooks.push(h);
      // A hook that runs before the dump stops the task's real work (the CUDA lock stops every GPU launch),
      // so downtime starts there, not at CRIU's freeze.
      let hooksStartedAt: number | undefined;
      if (hooks.length) {
        const t = Date.now();
        hooksStartedAt = t;
        progress({ phase: 'hooks', bytes: 0, estimatedBytes: estimate.imageBytes });
        const r = await this.runHooks('beforeCheckpoint', hooks, hookCtx, phases);
        ran = r.ran;
        phases.hooks = Date.now() - t;
        if (r.error) {
          const precise = r.error.err as HookErrorDetails | undefined;
          return await fail(precise?.engineStatus ?? 'retryable', precise?.engineCode ?? 'HOOK_FAILED', `hook ${r.error.hook} failed before the dump: ${describe(r.error.err)}`, r.error.err);
        }
      }

      if (dest.kind === 'stream') {
        const t = Date.now();
        try {
          const conn = await guard.race(dest.sink.open(guard.signal));
          sender = new ImageStreamSender(conn, (bytes) => progress({ phase: 'transfer', bytes, estimatedBytes: estimate.imageBytes }));
          let pageChannel: string | undefined;
          if (this.opts.directPages !== false && isPlainSocket(conn)) {
            // A second connection for the pages, authenticated like the first; any trouble here: relay instead.
            const second = await guard.race(dest.sink.open(guard.signal)).catch((err: unknown) => {
              if (err instanceof Aborted) throw err;
              return undefined;
            });
            if (second && isPlainSocket(second)) {
              pageChannel = randomBytes(16).toString('hex');
              sendPageChannelFrame(second, pageChannel);
              channel = second as Socket;
            } else second?.destroy();
          }
          // Post-copy where asked for and possible: not for a snapshot, nor for a task whose hooks need all of its
          // memory at once on the target (the CUDA restore).
          const offerPostCopy =
            pageChannel !== undefined &&
            this.opts.postCopy === true &&
            req.postCopy !== false &&
            !req.leaveRunning &&
            !hooks.some((h) => h.eagerRestore) &&
            postCopyBlocker() === undefined;
          const postCopyOffer = offerPostCopy ? { pids, pidNamespace: isPidNamespaceRoot(task.pid) } : undefined;
          sender.hello({ migrationId: req.migrationId, engine: 'criu', criuVersion: criu.version, estimatedBytes: estimate.imageBytes, ...(pageChannel ? { pageChannel } : {}), ...(postCopyOffer ? { postCopy: postCopyOffer } : {}) });
          if (channel) {
            // A target that predates page channels never answers: relay after a while (it expects relayed pages).
            const answer = await guard.race(Promise.race([sender.pagesMode(), new Promise<undefined>((r) => setTimeout(() => r(undefined), PAGE_CHANNEL_WAIT_MS + 2000).unref())]));
            direct = answer?.direct === true;
            postCopy = direct && offerPostCopy && answer?.postCopy === true;
            if (!direct) {
              channel.destroy();
              channel = undefined;
            }
          }
        } catch (err) {
          if (err instanceof Aborted) return await fail('fatal', err.reason === 'deadline' ? 'DEADLINE_EXCEEDED' : 'ABORTED', `checkpoint aborted while connecting to ${dest.sink.describe}`);
          return await fail('retryable', 'TRANSPORT_FAILED', `cannot open the image stream to ${dest.sink.describe}: ${describe(err)}`, err);
        }
        phases.connect = Date.now() - t;
      }

      // CRIU uses the channel itself with post-copy (requests in, pages out: measured, 64 MiB pulled in 0.75 s this
      // way, 1.1-1.3 s through the pump) and with SPOTWATCH_PAGE_PUMP=criu.
      const criuOwnsChannel = channel !== undefined && (postCopy || pagePumpMode() === 'criu');
      const args = buildDumpArgs({
        ...options,
        pid: task.pid,
        imagesDir,
        logFile: 'dump.log',
        logLevel: this.logLevel,
        linkRemap: this.opts.linkRemap ?? true,
        after: req.leaveRunning ? 'leave-running' : 'leave-stopped',
        freezeTimeoutSec: Math.min(10, Math.max(1, (req.deadline - Date.now()) / 2000)),
        ...(postCopy
          ? { lazyPages: { psSocketFd: criuOwnsChannel ? 0 : 3 }, statusFd: statusFdOf({ pageSocket: !criuOwnsChannel }) }
          : dest.kind === 'stream'
            ? { pageServer: { psSocketFd: criuOwnsChannel ? 0 : 3 } }
            : {}),
        ...(this.opts.extraDumpArgs ? { extraArgs: this.opts.extraDumpArgs } : {}),
      });
      const pumpBinary = channel && !criuOwnsChannel ? await locatePagePump() : undefined;
      const dumpStart = Date.now();
      progress({ phase: 'dump', bytes: 0, estimatedBytes: estimate.imageBytes });
      const run = startCriu(criu, args, {
        ...(criuOwnsChannel && channel ? { stdinSocket: channel } : { pageSocket: dest.kind === 'stream' }),
        statusPipe: postCopy,
        ...this.criuEnv,
        deadline: req.deadline,
        signal: guard.signal,
      });
      let relayError: unknown;
      let relay: Promise<number> = Promise.resolve(0);
      // The page stream broke: cut CRIU's page socket so the dump fails on its own (the task resumes), and kill it
      // only if it has not ended after a grace period.
      const abortDump = (): void => {
        run.pageSocket?.destroy();
        const kill = setTimeout(() => run.kill('abort'), DUMP_ABORT_GRACE_MS);
        kill.unref();
        void run.done.finally(() => clearTimeout(kill));
      };
      if (sender && criuOwnsChannel && channel) {
        // `criu dump` writes the channel itself (SPOTWATCH_PAGE_PUMP=criu: measurement only; no byte progress
        // during the dump, and on loopback a ~200 ms retransmission stall at its end, docs/migration-performance.md).
        channel.destroy(); // CRIU has its own descriptor now
        sender.onFailure((err) => {
          relayError ??= err;
          abortDump();
        });
      } else if (sender && run.pageSocket && channel) {
        // Pages go unframed into the direct channel, whose other end is the target's page server: through the
        // native pump when it is built (native-page-pump.ts), else through this event loop.
        const ch = channel;
        // (Post-copy: the pump moves the memory after the checkpoint has returned; that is not this call's progress.)
        const onPageBytes = (bytes: number): void => {
          if (!servingDump) progress({ phase: 'transfer', bytes: sender!.bytesSent + bytes, estimatedBytes: estimate.imageBytes });
        };
        const pump = pumpBinary ? startNativePagePump(pumpBinary, ch, run.pageSocket, onPageBytes) : undefined;
        relay = (pump ? pump.done : pumpPages(run.pageSocket, ch, onPageBytes)).catch((err: unknown) => {
          relayError = err;
          abortDump();
          return 0;
        });
        // The framed connection broke (or the target reported a failure): stop the dump, as a broken relay does.
        sender.onFailure((err) => {
          relayError ??= err;
          ch.destroy();
          pump?.kill();
          abortDump();
        });
      } else if (sender && run.pageSocket) {
        relay = sender.relayPages(run.pageSocket).catch((err: unknown) => {
          relayError = err;
          abortDump();
          return 0;
        });
      }
      // Post-copy: the dump is "done" for now when CRIU reports ready (frozen part over, images written); it goes on
      // serving the memory to the target and exits once the last page has left (pagesSettled below).
      const ready = postCopy ? await criuReady(run) : false;
      const readyAt = Date.now();
      if (ready) servingDump = run;
      const exit: CriuExit = postCopy && ready ? { code: 0, signal: null, stdout: '', stderr: '', durationMs: Date.now() - dumpStart } : await run.done;
      // (Post-copy: the relay carries the memory until the target has it all: settlePostCopy waits for it.)
      const pageBytesSent = ready ? 0 : await guard.race(relay).catch((err: unknown) => {
        relayError ??= err;
        return 0;
      });
      const dumpEnd = Date.now();
      phases.dump = dumpEnd - dumpStart;
      const dumped = exit.code === 0 && relayError === undefined;
      // What CRIU wrote leaves for the target at once (it needs all of it before it can restore); what only this
      // agent adds — the tree's pids, the manifest — follows. Small files go out synchronously, in this tick.
      const filesStart = Date.now();
      const criuFilesSent = dumped && sender ? sender.sendFiles(imagesDir, (await listFiles(imagesDir)).map((f) => f.name)) : undefined;
      criuFilesSent?.catch(() => undefined);
      // The tree may have forked between our first look and the freeze; now it is stopped (or resumed after a
      // failure), so this is the tree that was dumped and that must be stopped or resumed as one.
      for (const p of await processTree(task.pid)) if (!pids.includes(p)) pids.push(p);

      if (!dumped) {
        return await this.dumpFailure(exit, relayError, guard, logPath, fail);
      }

      const stats = postCopy ? undefined : parseDumpStats(readBytesSync(join(imagesDir, 'stats-dump')));
      // (Post-copy: CRIU's stats come at its very end; its log says when it seized the tree — read once the target
      // has the image, off the task's downtime.)
      const frozenAtOf = async (): Promise<number> =>
        hooksStartedAt ??
        (stats ? Math.max(dumpStart, dumpEnd - Math.round(stats.frozenTimeUs / 1000)) : postCopy ? seizedAtFromLog(await readText(logPath), dumpStart, readyAt) : dumpStart);
      if (stats) {
        phases.criuFreeze = Math.round(stats.freezingTimeUs / 1000);
        phases.criuFrozen = Math.round(stats.frozenTimeUs / 1000);
        phases.criuMemdump = Math.round(stats.memdumpTimeUs / 1000);
        phases.criuMemwrite = Math.round(stats.memwriteTimeUs / 1000);
      }
      const pageBytes = dest.kind === 'stream' && !direct ? pageBytesSent : (stats?.pagesWritten ?? 0) * 4096;
      if (direct) sender?.countDirectPages(pageBytes);
      const manifest: CriuImageManifest = {
        format: 1,
        engine: 'criu',
        criuVersion: criu.version,
        migrationId: req.migrationId,
        createdAt: new Date().toISOString(),
        rootPid: task.pid,
        pids,
        options,
        estimate,
        pageBytes,
        streamed: dest.kind === 'stream',
      };
      if (isPidNamespaceRoot(task.pid)) manifest.pidNamespace = true;
      if (postCopy) manifest.postCopy = true;
      if (task.id !== undefined) manifest.taskId = task.id;
      if (task.control !== undefined) manifest.taskControl = task.control;
      manifest.hooks = hooks.map((h) => h.name);
      writeFileSync(join(imagesDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);

      let imageBytes: number;
      if (sender && criuFilesSent) {
        try {
          const files: StreamFile[] = [...(await guard.race(criuFilesSent)), ...(await guard.race(sender.sendFiles(imagesDir, [MANIFEST_FILE])))];
          await guard.race(sender.finish({ files, pageBytes }));
        } catch (err) {
          if (err instanceof Aborted) {
            sender.destroy();
            return await fail('fatal', err.reason === 'deadline' ? 'DEADLINE_EXCEEDED' : 'ABORTED', `checkpoint aborted while the image was being handed to ${dest.kind === 'stream' ? dest.sink.describe : ''}`);
          }
          const se = err instanceof ImageStreamError ? err : undefined;
          return await fail(se?.status ?? 'retryable', se?.code ?? 'TRANSPORT_FAILED', `image transfer to ${dest.kind === 'stream' ? dest.sink.describe : ''} failed after the dump: ${describe(err)}`, err);
        }
        phases.transfer = Date.now() - filesStart;
        imageBytes = sender.bytesSent;
      } else {
        imageBytes = (await listFiles(imagesDir)).reduce((n, f) => n + f.size, 0);
      }

      // The image is complete (and, for a stream, ACKed by the target): stop the task for good.
      const tc = Date.now();
      progress({ phase: 'commit', bytes: imageBytes, estimatedBytes: estimate.imageBytes });
      let state: TaskState;
      if (req.leaveRunning) {
        state = await this.settleSource(task.pid, pids, wasStopped);
      } else if (postCopy) {
        // Frozen by CRIU, which serves its memory now: it cannot run here unless that transfer fails (pagesSettled).
        state = 'stopped';
      } else {
        // Dead (zombies included) is enough to commit: the pids only matter to a restore on this same node,
        // which waits for them itself.
        signalAll(pids, 'SIGKILL');
        await waitDead(pids, this.releaseTimeoutMs);
        state = await taskState(task.pid);
      }
      if (sender) {
        try {
          await sender.commit({ sourceStopped: !req.leaveRunning }, { awaitFilled: postCopy });
        } catch {
          // the target has the whole image; it learns of the commit or reports the broken stream itself
        }
      }
      phases.commit = Date.now() - tc;
      const frozenAt = await frozenAtOf();
      const hookErr = await this.afterCheckpointHooks(ran, hookCtx, true, state);
      if (hookErr && req.leaveRunning) {
        return engineFailure('retryable', 'HOOK_FAILED', `checkpoint written, but hooks failed to resume the task: ${hookErr}`, started, { taskState: state, logPath });
      }
      return engineOk(
        {
          location: dest.kind === 'directory' ? dest.path : dest.sink.describe,
          imageBytes,
          frozenAt,
          taskState: state,
          phases,
          logPath,
          dataPath: dest.kind === 'directory' ? 'directory' : postCopy ? 'post-copy' : !direct ? 'relay' : criuOwnsChannel ? 'direct channel (criu)' : `direct channel (${pumpBinary ? 'native pump' : 'agent pump'})`,
          ...(postCopy && sender ? { pagesSettled: this.settlePostCopy(run, relay, sender, { root: task.pid, pids, wasStopped }, imagesDir, logPath, req.deadline) } : {}),
        },
        started,
      );
    } catch (err) {
      if (err instanceof Aborted) return await fail('fatal', err.reason === 'deadline' ? 'DEADLINE_EXCEEDED' : 'ABORTED', 'checkpoint aborted');
      return await fail('fatal', 'INTERNAL', `checkpoint failed unexpectedly: ${describe(err)}`, err);
    } finally {
      guard.dispose();
    }
  }

  private async dumpFailure(
    exit: CriuExit,
    relayError: unknown,
    guard: CallGuard,
    logPath: string,
    fail: (status: EngineFailure['status'], code: EngineErrorCode, message: string, cause?: unknown) => Promise<EngineFailure>,
  ): Promise<EngineFailure> {
    if (exit.killedFor === 'deadline' || guard.reason === 'deadline') return fail('fatal', 'DEADLINE_EXCEEDED', 'criu dump killed: the deadline passed');
    if (exit.killedFor === 'abort' && relayError === undefined) return fail('fatal', 'ABORTED', 'criu dump killed: aborted by the caller');
    if (exit.spawnError) return fail('fatal', 'ENGINE_UNAVAILABLE', `cannot run criu: ${exit.spawnError.message}`, exit.spawnError);
    if (relayError instanceof ImageStreamError) {
      return fail(relayError.status, relayError.code, `image stream failed during the dump: ${relayError.message}`, relayError);
    }
    const f = classifyCriuFailure('dump', await readText(logPath), exit.stderr, exit.code);
    return fail(f.status, f.code, describeCriuFailure('dump', f, logPath), { exitCode: exit.code, signal: exit.signal, errors: f.errors });
  }

  async receive(req: ReceiveRequest): Promise<EngineResult<ReceivedImage>> {
    const started = Date.now();
    const receiver = new ImageStreamReceiver(req.connection, (bytes) => {
      try {
        req.onProgress?.({ phase: 'receive', bytes });
      } catch {
        // ignore listener errors
      }
    });
    // Refusals still tell the source why, so its checkpoint fails with the target's reason.
    const refuse = (f: EngineFailure): EngineFailure => {
      receiver.abort({ code: f.code, status: f.status, message: `target refused the image: ${f.message}` });
      return f;
    };
    const pre = this.precheck(req, 'receive', started);
    if (pre) return refuse(pre);
    const criu = await this.criuOrFailure(started);
    if ('status' in criu) return refuse(criu);
    if (!(await isEmptyOrAbsent(req.directory))) {
      return refuse(engineFailure('fatal', 'INVALID_REQUEST', `image directory ${req.directory} is not empty; every migration needs its own`, started));
    }
    await mkdir(req.directory, { recursive: true });
    const logPath = join(req.directory, 'page-server.log');
    const guard = new CallGuard(req.deadline, req.signal);
    let pageServer: ReturnType<typeof startCriu> | undefined;
    let postCopyChannel: Socket | undefined;
    let postCopyDaemon: PostCopySource['daemon'] | undefined;
    let heldDaemon: PreparedCriu | undefined;
    let migrationId: string | undefined;
    // A receive that fails ends what it started for the restore: the held daemon and restore, a started daemon.
    const stopHeld = (): void => {
      heldDaemon?.cancel();
      void postCopyDaemon?.then((d) => 'run' in d && d.run.kill('abort'));
      if (migrationId !== undefined) this.dropPreparedRestore(migrationId);
    };
    const failWith = (status: EngineFailure['status'], code: EngineErrorCode, message: string, cause?: unknown): EngineFailure => {
      receiver.abort({ code, status, message });
      pageServer?.kill('abort');
      postCopyChannel?.destroy();
      stopHeld();
      const extra: Partial<EngineFailure> = { logPath };
      if (cause !== undefined) extra.cause = cause;
      return engineFailure(status, code, message, started, extra);
    };
    try {
      const hello = await guard.race(receiver.readHello(req.migrationId));
      migrationId = hello.migrationId;
      try {
        req.onHello?.(hello.migrationId);
      } catch {
        // a listener's error is not the stream's
      }
      let channel: Socket | undefined;
      if (hello.pageChannel !== undefined) {
        channel = await guard.race(takePageChannel(hello.pageChannel, PAGE_CHANNEL_WAIT_MS, guard.signal));
        if (channel && !isPlainSocket(channel)) {
          channel.destroy();
          channel = undefined;
        }
      }
      // Post-copy (the source offered it): no page server; the channel waits for this image's restore, whose
      // lazy-pages daemon pulls the memory from the source through it. Taken unless the tree's pids are in use here.
      const offer = hello.postCopy;
      if (channel && offer && this.opts.acceptPostCopy !== false && (offer.pidNamespace || !offer.pids.some((p) => pidExists(p)))) {
        postCopyChannel = channel;
        receiver.pagesMode({ direct: true, postCopy: true });
        // The lazy-pages daemon and the restore start inside the task's downtime: their processes start now, while
        // the source dumps (the daemon's already holds the channel, which nobody reads until it runs).
        const holder = await this.execHolder();
        if (holder) {
          heldDaemon = prepareCriu(criu, holder, { stdinSocket: channel, statusPipe: true });
          channel.destroy();
        }
        this.prepareRestore(criu, holder, hello.migrationId);
        await guard.race(receiver.receive(req.directory, undefined));
      } else {
        pageServer = startCriu(
          criu,
          buildPageServerArgs({ imagesDir: req.directory, logFile: 'page-server.log', logLevel: this.logLevel, on: { psSocketFd: channel ? 0 : 3 } }),
          { ...(channel ? { stdinSocket: channel } : { pageSocket: true }), deadline: req.deadline, signal: guard.signal },
        );
        // The page server owns the channel now: close ours before the source may start its dump.
        channel?.destroy();
        if (hello.pageChannel !== undefined) receiver.pagesMode({ direct: channel !== undefined });
        this.prepareRestore(criu, await this.execHolder(), hello.migrationId);
        await guard.race(receiver.receive(req.directory, pageServer.pageSocket));
        const psExit = await guard.race(pageServer.done);
        if (psExit.code !== 0) {
          const f = classifyCriuFailure('page-server', await readText(logPath), psExit.stderr, psExit.code);
          return failWith('retryable', f.code === 'CHECKPOINT_FAILED' ? 'TRANSPORT_FAILED' : f.code, describeCriuFailure('page-server', f, logPath));
        }
      }
      // The image as it arrived (before a post-copy daemon adds its log and socket).
      const files = await listFiles(req.directory);
      if (channel && !postCopyChannel) {
        // Pages that came over the direct channel count as received image bytes, as relayed ones do.
        for (const f of files) if (/^pages-\d+\.img$/.test(f.name)) receiver.countDirectPages(f.size);
      }
      if (!hasImageCore(files)) {
        return failWith('fatal', 'IMAGE_INVALID', `the stream for ${hello.migrationId} ended without a complete CRIU image (no inventory.img / pstree.img)`);
      }
      // ACK leaves first (written in this tick); the post-copy daemon, which needs the image files only, starts
      // while the source commits (the restore connects to it).
      const acked = guard.race(receiver.ack({ files: files.length, bytes: receiver.bytesReceived }));
      if (postCopyChannel) {
        postCopyDaemon = this.startLazyPages(criu, req.directory, 'lazy-pages.log', req.deadline, heldDaemon ?? postCopyChannel);
        heldDaemon = undefined;
        postCopyDaemon.catch(() => undefined);
      }
      await acked;
      // (Post-copy: the daemon must hold the directory before the caller may move it — it opens it as it starts.)
      const [commit] = await Promise.all([guard.race(receiver.awaitCommit()), postCopyDaemon]);
      // (Post-copy: the stream stays open; the restore tells the source when every page is in place.)
      if (!postCopyChannel) receiver.close();
      if (postCopyDaemon) this.keepPostCopySource(hello.migrationId, postCopyDaemon, receiver);
      return engineOk(
        {
          directory: req.directory,
          migrationId: hello.migrationId,
          imageBytes: receiver.bytesReceived,
          files: files.length,
          sourceStopped: commit.sourceStopped,
        },
        started,
      );
    } catch (err) {
      if (err instanceof Aborted) {
        const f = abortedFailure(err.reason, 'image reception', started, { logPath });
        receiver.abort({ code: f.code, status: f.status, message: f.message });
        pageServer?.kill('abort');
        postCopyChannel?.destroy();
        stopHeld();
        return f;
      }
      if (err instanceof ImageStreamError) {
        return failWith(err.status, err.code, `image reception failed: ${err.message}`, err);
      }
      return failWith('retryable', 'TRANSPORT_FAILED', `image reception failed: ${describe(err)}`, err);
    } finally {
      guard.dispose();
      if (pageServer && pageServer.child.exitCode === null) pageServer.kill('abort');
    }
  }

  private looksLikeImage(dir: string): boolean {
    return IMAGE_CORE_FILES.every((name) => existsSync(join(dir, name)));
  }

  /** Reads the manifest the checkpoint wrote, if any. */
  async readManifest(dir: string): Promise<CriuImageManifest | undefined> {
    try {
      // Synchronous: a few KiB, read inside the task's downtime (a thread-pool round trip costs more than the read).
      const m = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as CriuImageManifest;
      return m.engine === 'criu' && m.format === 1 ? m : undefined;
    } catch {
      return undefined;
    }
  }

  async restore(req: RestoreRequest): Promise<EngineResult<RestoreResult>> {
    const manifest = await this.readManifest(req.source.path);
    if (!manifest?.postCopy) return this.restoreImage(req, manifest, undefined);
    // Post-copy from the source: its memory is behind the page channel this image came with, and the source waits to
    // hear whether it all arrived here before it drops its copy.
    const source = this.takePostCopySource(manifest.migrationId);
    const result = await this.restoreImage(req, manifest, source?.daemon);
    if (result.status !== 'ok') {
      source?.stream.notFilled(result.message);
      result.imageWhole = false; // it cannot go to another target: the source runs the task again
      return result;
    }
    result.value.memorySettled = result.value.memorySettled?.then((settled) => {
      if (settled.ok) source?.stream.filled();
      else source?.stream.notFilled(settled.message);
      return settled;
    });
    return result;
  }

  /** The restore itself, of the image in `req.source.path` whose manifest (if any) `restore` has read. */
  private async restoreImage(req: RestoreRequest, manifest: CriuImageManifest | undefined, preStarted: PostCopySource['daemon'] | undefined): Promise<EngineResult<RestoreResult>> {
    const started = Date.now();
    const pre = this.precheck(req, 'restore', started);
    if (pre) return pre;
    const criu = await this.criuOrFailure(started);
    if ('status' in criu) return criu;
    const dir = req.source.path;
    if (!this.looksLikeImage(dir)) {
      return engineFailure('fatal', 'IMAGE_INVALID', `${dir} holds no complete CRIU image (inventory.img and pstree.img are required)`, started);
    }
    const options = manifest?.options ?? this.taskOptions(this.opts.shellJob === true);
    const bytes = manifest?.estimate?.imageBytes ?? manifest?.pageBytes ?? 0;
    const needMs = this.expectedRestoreMs(bytes);
    if (needMs > req.deadline - Date.now()) {
      return engineFailure('fatal', 'DEADLINE_TOO_CLOSE', `restore refused: ~${Math.round(bytes / 1048576)} MiB needs ~${Math.round(needMs)} ms, ${req.deadline - Date.now()} ms left`, started);
    }
    const progress = (e: ProgressEvent): void => {
      try {
        req.onProgress?.(e);
      } catch {
        // ignore listener errors
      }
    };

    // Post-copy where asked for and no hook that applied at the checkpoint needs the whole memory at once. Its page
    // daemon starts now, beside the wait for the pids below (it needs the images, not the pids).
    const eager = new Set(this.hooks.filter((h) => h.eagerRestore).map((h) => h.name));
    // Post-copy from the source: the memory is still there, behind the page channel this image came with.
    const postCopy = manifest?.postCopy === true;
    if (postCopy && !preStarted) {
      return engineFailure('fatal', 'IMAGE_INVALID', `${dir} is a post-copy image: its memory is on the source, and the page channel to it is gone (only the node that received the stream can restore it, within ${POST_COPY_CLAIM_MS / 1000} s)`, started);
    }
    const lazy = postCopy || (this.opts.lazyRestore === true && !(manifest?.hooks ?? []).some((name) => eager.has(name)));
    const logName = freeLogName(dir, 'restore');
    const lazyStart = Date.now();
    const lazyStarting = lazy ? (preStarted ?? this.startLazyPages(criu, dir, logName.replace(/^restore/, 'lazy-pages'), req.deadline)) : undefined;
    const stopLazy = async (): Promise<void> => {
      const d = await lazyStarting;
      if (d && !('error' in d)) d.run.kill('abort');
    };
    // The tree gets its old pids back: they must be free here. A zombie about to be reaped gets a moment; a
    // process that is still exiting (on one machine: the source itself, tearing down gigabytes of memory) gets
    // as long as the deadline allows. A live, unrelated process is a conflict at once.
    let waitedForPidsMs: number | undefined;
    if (manifest && !manifest.pidNamespace && manifest.pids.some((p) => pidExists(p))) {
      const waitStarted = Date.now();
      await waitGone(manifest.pids, Math.min(this.releaseTimeoutMs, Math.max(0, req.deadline - Date.now() - needMs)));
      const dying = async () => (await Promise.all(manifest.pids.filter((p) => pidExists(p)).map(readProcStat))).every((st) => st === undefined || isDying(st));
      while (manifest.pids.some((p) => pidExists(p)) && Date.now() < req.deadline - needMs && (await dying())) await waitGone(manifest.pids, 100);
      waitedForPidsMs = Date.now() - waitStarted;
      const busy = manifest.pids.filter((p) => pidExists(p));
      if (busy.length) {
        await stopLazy();
        return engineFailure('retryable', 'RESTORE_CONFLICT', `pid ${busy.join(', ')} of the image is in use on this node; restore elsewhere or once it is free`, started);
      }
    }

    const guard = new CallGuard(req.deadline, req.signal);
    // Time spent waiting for the image's pids to be released here (on one machine: the source task exiting).
    const phases: Record<string, number> = waitedForPidsMs !== undefined ? { waitPids: waitedForPidsMs } : {};
    const logPath = join(dir, logName);
    const pidFile = join(dir, logName.replace(/\.log$/, '.pid'));
    const identity = { ...(manifest?.taskId !== undefined ? { id: manifest.taskId } : {}), ...(manifest?.taskControl ? { control: manifest.taskControl } : {}) };
    const task: TaskRef = { kind: 'process', pid: 0, ...identity };
    const hookCtx: HookContext = { task, migrationId: req.migrationId, deadline: req.deadline, signal: guard.signal, pids: [], ...(req.stagedDirectory ? { stagedDirectory: req.stagedDirectory } : {}) };
    let lazyDaemon: LazyPagesDaemon | undefined;
    try {
      // The hooks that applied at the checkpoint (all of them for an image that does not say).
      const applied = manifest?.hooks;
      const hooks = applied ? this.hooks.filter((h) => applied.includes(h.name)) : this.hooks;
      if (hooks.length) {
        const t = Date.now();
        const r = await this.runHooks('beforeRestore', hooks, { ...hookCtx, directory: dir });
        phases.hooks = Date.now() - t;
        if (r.error) {
          await stopLazy();
          return engineFailure('retryable', 'HOOK_FAILED', `hook ${r.error.hook} failed before the restore: ${describe(r.error.err)}`, started, { cause: r.error.err });
        }
      }
      rmSync(pidFile, { force: true });
      const args = buildRestoreArgs({
        ...options,
        imagesDir: dir,
        logFile: logName,
        logLevel: this.logLevel,
        pidFile,
        lazyPages: lazy,
        ...(this.opts.extraRestoreArgs ? { extraArgs: this.opts.extraRestoreArgs } : {}),
      });
      const t = Date.now();
      progress({ phase: 'restore', bytes: 0, estimatedBytes: bytes });
      if (lazyStarting) {
        const daemon = await lazyStarting;
        phases.lazyPagesStart = Date.now() - lazyStart;
        if ('error' in daemon) return engineFailure('retryable', 'RESTORE_FAILED', daemon.error, started, { logPath: daemon.logPath });
        lazyDaemon = daemon;
      }
      const held = this.claimPreparedRestore(req.migrationId);
      const exit = await (held ? held.start(args, { deadline: req.deadline, signal: guard.signal }) : startCriu(criu, args, { deadline: req.deadline, signal: guard.signal, ...this.criuEnv })).done;
      phases.restore = Date.now() - t;
      if (exit.code !== 0) {
        await stopLazy();
        return await this.criuFailure('restore', exit, guard, logPath, started);
      }

      const pid = Number(readTextSync(pidFile).trim());
      if (!Number.isInteger(pid) || pid <= 0) {
        return engineFailure('retryable', 'RESTORE_FAILED', `criu restore succeeded but wrote no pid to ${pidFile}`, started, { logPath });
      }
      const tv = Date.now();
      progress({ phase: 'verify', bytes, estimatedBytes: bytes });
      const state = await taskState(pid);
      phases.verify = Date.now() - tv;
      if (state !== 'running') {
        return engineFailure('retryable', 'RESTORE_FAILED', `the restored task ${pid} is ${state} right after the restore (see the task's own output and ${logPath})`, started, { logPath, taskState: state });
      }
      const stats = parseRestoreStats(readBytesSync(join(dir, 'stats-restore')));
      if (stats) {
        phases.criuForking = Math.round(stats.forkingTimeUs / 1000);
        phases.criuRestore = Math.round(stats.restoreTimeUs / 1000);
      }
      const restored: TaskRef = { kind: 'process', pid, ...identity };
      const memorySettled = lazyDaemon ? this.settleLazyPages(lazyDaemon, pid) : undefined;
      if (hooks.length) {
        const th = Date.now();
        const ctx: HookContext = { ...hookCtx, task: restored, pids: await processTree(pid) };
        for (const h of [...hooks].reverse()) {
          try {
            const t = Date.now();
            await h.afterRestore?.(ctx);
            if (h.afterRestore) phases[`hookAfter.${h.name}`] = Date.now() - t;
          } catch (err) {
            // A restore is ok only once the task runs as it should. One whose hooks failed (CUDA state not
            // restored, the task not resumed) is taken down again: the image is still whole, and a retry on
            // another target must not leave a second copy running here.
            const tree = await processTree(pid);
            signalAll(tree, 'SIGKILL');
            await waitDead(tree, this.releaseTimeoutMs);
            await stopLazy();
            await memorySettled;
            return engineFailure('retryable', 'HOOK_FAILED', `task restored as ${pid}, but hook ${h.name} failed after the restore: ${describe(err)}; the restored tree was killed, the image is whole`, started, {
              logPath,
              cause: err,
              taskState: await taskState(pid),
            });
          }
        }
        phases.hooksAfter = Date.now() - th;
      }
      return engineOk({ task: restored, phases, logPath, ...(memorySettled ? { memorySettled } : {}), ...(postCopy ? { postCopy } : {}) }, started);
    } catch (err) {
      await stopLazy();
      if (err instanceof Aborted) return abortedFailure(err.reason, 'restore', started, { logPath });
      return engineFailure('fatal', 'INTERNAL', `restore failed unexpectedly: ${describe(err)}`, started, { logPath, cause: err });
    } finally {
      guard.dispose();
    }
  }

  /**
   * Keeps a received post-copy image's lazy-pages daemon (and its stream, to confirm the fill) for its restore.
   * Unclaimed after a while (the restore never came), the daemon is stopped: the source then runs the task again.
   */
  private keepPostCopySource(migrationId: string, daemon: PostCopySource['daemon'], stream: ImageStreamReceiver): void {
    this.dropPostCopySource(migrationId, 'replaced by a newer stream for the same migration');
    const timer = setTimeout(() => this.dropPostCopySource(migrationId, `no restore within ${POST_COPY_CLAIM_MS / 1000} s`), POST_COPY_CLAIM_MS);
    timer.unref();
    this.postCopySources.set(migrationId, { daemon, stream, timer });
  }

  private takePostCopySource(migrationId: string): PostCopySource | undefined {
    const kept = this.postCopySources.get(migrationId);
    if (!kept) return undefined;
    clearTimeout(kept.timer);
    this.postCopySources.delete(migrationId);
    return kept;
  }

  private dropPostCopySource(migrationId: string, why: string): void {
    const kept = this.takePostCopySource(migrationId);
    if (!kept) return;
    kept.stream.notFilled(`post-copy restore on the target did not happen: ${why}`);
    void kept.daemon.then((d) => 'run' in d && d.run.kill('abort'));
  }

  /**
   * The rest of a post-copy checkpoint: the dump serves the memory until the target's daemon is done; the tree is
   * killed here only once the target confirms every page is in place (FILLED). CRIU's lazy page server takes a plain
   * close of the page connection for "done" — a target that dies cleanly would look like success — so without the
   * confirmation the tree, left stopped, runs here again. A dump that fails has let it run again itself.
   */
  private async settlePostCopy(
    run: CriuRun,
    relay: Promise<number>,
    sender: ImageStreamSender,
    tree: { root: number; pids: number[]; wasStopped: boolean },
    imagesDir: string,
    logPath: string,
    deadline: number,
  ): Promise<NonNullable<CheckpointResult['pagesSettled']> extends Promise<infer T> ? T : never> {
    const t = Date.now();
    const confirmed = Promise.race([
      sender.filled().then(
        () => undefined,
        (err: unknown) => describe(err),
      ),
      new Promise<string>((r) => setTimeout(() => r('the deadline passed'), Math.max(0, deadline - Date.now())).unref()),
    ]);
    const [exit] = await Promise.all([run.done, relay]);
    const notFilled = exit.code === 0 && !exit.killedFor ? await confirmed : undefined;
    if (exit.code === 0 && !exit.killedFor && notFilled === undefined) {
      signalAll(tree.pids, 'SIGKILL');
      await waitDead(tree.pids, this.releaseTimeoutMs);
      // (CRIU's stats-dump is written before the pages move, and says nothing of them.)
      let lazyPages = 0;
      for (const f of await listFiles(imagesDir)) if (/^pagemap-\d+\.img$/.test(f.name)) lazyPages += lazyPagesInPagemap(await readFile(join(imagesDir, f.name)));
      return { ok: true, ms: Date.now() - t, bytes: lazyPages * 4096 };
    }
    sender.destroy();
    const state = await this.settleSource(tree.root, tree.pids, tree.wasStopped);
    const why =
      notFilled !== undefined
        ? `the target did not confirm every page in place (${notFilled})`
        : `criu dump ${exit.killedFor ? `was killed (${exit.killedFor})` : `exited ${exit.code ?? exit.signal ?? '?'}`} before the target had every page`;
    return { ok: false, ms: Date.now() - t, message: `post-copy: ${why}; the task is ${state} on the source (see ${logPath})`, taskState: state };
  }

  /**
   * Starts `criu lazy-pages` for a post-copy restore and waits for its socket (the restore connects to it). Its own
   * deadline is the restore's: a fill still running then is killed, and so is the task (settleLazyPages).
   */
  private async startLazyPages(
    binary: CriuBinary,
    dir: string,
    logName: string,
    deadline: number,
    /** Post-copy from the source: its page channel, or a held process that has it as stdin already. */
    fromSource?: Socket | PreparedCriu,
  ): Promise<LazyPagesDaemon | { error: string; logPath: string }> {
    const logPath = join(dir, logName);
    rmSync(join(dir, 'lazy-pages.socket'), { force: true });
    const args = buildLazyPagesArgs({ imagesDir: dir, logFile: logName, logLevel: this.logLevel, statusFd: statusFdOf({}), ...(fromSource ? { fromSource: { psSocketFd: 0 } } : {}) });
    const held = fromSource && !(fromSource instanceof Socket) ? fromSource : undefined;
    const channel = fromSource instanceof Socket ? fromSource : undefined;
    const run = held ? held.start(args, { deadline }) : startCriu(binary, args, { deadline, statusPipe: true, ...(channel ? { stdinSocket: channel } : {}) });
    // The daemon owns the source's page channel now (closing it later tells the source the transfer failed).
    channel?.destroy();
    // Ready: CRIU's status byte on fd 3; not ready: fd 3 closed without it, the daemon's exit, or 5 s of nothing.
    if (!(await criuReady(run, 5_000))) {
      run.kill('abort');
      const exited = await Promise.race([run.done, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000))]);
      return { error: `criu lazy-pages did not start (${exited && !exited.killedFor ? `exit ${exited.code}` : 'no ready status within 5 s'}); see ${logPath}`, logPath };
    }
    return { run, logPath, startedAt: Date.now() };
  }

  /** Resolves when the lazy-pages daemon has put every page in place; if it fails instead, the task is killed. */
  private async settleLazyPages(daemon: LazyPagesDaemon, pid: number): Promise<{ ok: true; ms: number } | { ok: false; ms: number; message: string }> {
    const exit = await daemon.run.done;
    const ms = Date.now() - daemon.startedAt;
    if (exit.code === 0 && !exit.killedFor) return { ok: true, ms };
    // Pages that never arrive would read as zeros once the daemon's userfaultfd is gone: the task must not go on.
    const tree = pidExists(pid) ? await processTree(pid).catch(() => [pid]) : [];
    signalAll(tree, 'SIGKILL');
    await waitDead(tree, this.releaseTimeoutMs);
    const why = exit.killedFor ? `was stopped (${exit.killedFor})` : `exited ${exit.code ?? exit.signal ?? '?'}`;
    return { ok: false, ms, message: `criu lazy-pages ${why} before every page was in place; the restored task was killed, the image is whole (see ${daemon.logPath})` };
  }

  private async criuFailure(action: CriuAction, exit: CriuExit, guard: CallGuard, logPath: string, started: number): Promise<EngineFailure> {
    if (exit.killedFor || guard.reason) return abortedFailure(exit.killedFor ?? guard.reason ?? 'abort', `criu ${action}`, started, { logPath });
    if (exit.spawnError) return engineFailure('fatal', 'ENGINE_UNAVAILABLE', `cannot run criu: ${exit.spawnError.message}`, started, { cause: exit.spawnError });
    const f = classifyCriuFailure(action, await readText(logPath), exit.stderr, exit.code);
    return engineFailure(f.status, f.code, describeCriuFailure(action, f, logPath), started, { logPath, cause: { exitCode: exit.code, signal: exit.signal, errors: f.errors } });
  }
}

/**
 * Waits for CRIU's status byte (`--status-fd`, started with `statusPipe`): true when it came, false when the
 * fd closed without it or CRIU exited first.
 */
function criuReady(run: CriuRun, timeoutMs?: number): Promise<boolean> {
  const status = run.status;
  return new Promise<boolean>((resolve) => {
    const timer = timeoutMs !== undefined ? setTimeout(() => settle(false), timeoutMs) : undefined;
    function settle(v: boolean): void {
      if (timer) clearTimeout(timer);
      status?.destroy();
      resolve(v);
    }
    if (!status) return settle(false);
    status.once('data', () => settle(true));
    status.once('end', () => settle(false));
    status.once('error', () => settle(false));
    void run.done.then(() => settle(false));
  });
}
