import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { networkInterfaces, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Queue, Worker, type Job } from 'bullmq';
import type { Config } from '../config.js';
import type { CheckpointEngine, CheckpointResult, EngineFailure, EngineResult } from '../engines/checkpoint-engine.js';
import { listenForImageStreams, tcpImageSink, type ImageStreamListener } from '../engines/criu/transport.js';
import { estimateImageBytes, pidExists, processTree, signalAll, waitGone } from '../engines/criu/proc.js';
import { gpuMemoryByPid } from '../engines/cuda/index.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { noticeSchema, type Notice } from '../notice.js';
import type { InstanceIdentity } from '../provider.js';
import { NOTICES_QUEUE_NAME } from '../queue/notice-queue.js';
import { Registry } from '../registry/registry.js';
import type { MigrationRecord, NodeRecord, TaskRecord } from '../registry/types.js';
import { clusterAuthenticator } from './peer-auth.js';
import { FORWARD_MAGIC, STAGE_MAGIC, receiveImageDirectory, sendImageDirectory } from './image-forward.js';
import { stageTask, stagedDirectoryFor, stagingDirectoryFor, type StagedFiles } from './task-stage.js';
import { readExactly } from '../util/stream-read.js';
import { Planner, type NodeJob } from './planner.js';
import { DEFAULT_POLICY, type MigrationPolicy } from './policy.js';

/** The queue of work that must run on one node (checkpoints on the source, fallbacks). */
export function nodeQueueName(nodeId: string): string {
  return `node.${nodeId}`;
}

/** Time kept back from the notice deadline for the steps after a checkpoint (verify, report). */
const DEADLINE_RESERVE_MS = 1000;
/** The share of the time left that staging (the task writing, then the send to the target) may take. */
const STAGE_SHARE = 0.5;
/**
 * Post-copy's pull rate before any was measured: the slowest seen here (CRIU's lazy-pages, a task touching all of its
 * memory: 79–199 MB/s), rounded down. The pull must end before the deadline: the source takes the memory with it.
 */
const DEFAULT_PULL_BYTES_PER_SEC = 64 * 1024 * 1024;
/** The share of the time left that post-copy's pull may be expected to take; beyond it the checkpoint streams. */
const PULL_SHARE = 0.5;

/**
 * Whether post-copy's pull of `bytes` at `bytesPerSec` is expected to end within its share of `msLeft` (the source
 * node goes at the deadline, and with it the memory the target has not pulled yet).
 */
export function postCopyFitsDeadline(bytes: number, bytesPerSec: number | undefined, msLeft: number): { fits: boolean; pullMs: number } {
  const pullMs = Math.round((bytes * 1000) / (bytesPerSec && bytesPerSec > 0 ? bytesPerSec : DEFAULT_PULL_BYTES_PER_SEC));
  return { fits: pullMs <= msLeft * PULL_SHARE, pullMs };
}

/** Staged files older than this that no migration picked up are removed when an agent starts. */
const STALE_STAGE_MS = 60 * 60_000;
/** Received staged files go this long after their migration's deadline, used or not (a restore runs until +5 min). */
const STAGED_KEPT_AFTER_DEADLINE_MS = 10 * 60_000;

export interface NodeRuntimeOptions {
  config: Config;
  nodeId: string;
  identity: InstanceIdentity;
  engine: CheckpointEngine;
  logger: Logger;
  metrics: Metrics;
  /** Runs on this node for every notice about it, whoever detected it (must not block: cluster actions). */
  onNoticed?: (notice: Notice) => void;
  /** Runs on this node once every task of a notice is safe (e.g. Azure: approve the scheduled event). */
  onDrained?: (notice: Notice) => Promise<void>;
  /** GPU facts of this node (model, count, free bytes), refreshed with each heartbeat. */
  gpuInfo?: () => Promise<{ model: string; count: number; freeBytes: number }>;
}

/**
 * Everything an agent does for migrations on its node: heartbeats its node and watches its tasks in the
 * registry, plans notices from the shared notices queue, runs checkpoints and fallbacks from its own node queue,
 * and receives image streams from other agents, restoring them here.
 */
export class NodeRuntime {
  readonly registry: Registry;
  private readonly logger: Logger;
  private readonly planner: Planner;
  private readonly connection: { url: string };
  private readonly nodeQueues = new Map<string, Queue>();
  private noticeWorker: Worker | undefined;
  private nodeWorker: Worker | undefined;
  private listener: ImageStreamListener | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly authenticate;
  private stopped = false;

  constructor(private readonly o: NodeRuntimeOptions) {
    const { config } = o;
    this.logger = o.logger.child({ component: 'migration' });
    this.registry = new Registry(config.redisUrl, config.queuePrefix);
    this.connection = { url: config.redisUrl };
    const policy: MigrationPolicy = {
      ...DEFAULT_POLICY,
      rebalance: config.migrateOn.includes('rebalance'),
      maintenanceMigrate: config.migrateOn.includes('maintenance-migrate'),
      maintenanceFreeze: config.migrateOn.includes('maintenance-freeze'),
    };
    this.planner = new Planner({ registry: this.registry, logger: this.logger, policy, defaultRates: config.initialRates, dispatch: (nodeId, job) => this.dispatch(nodeId, job) });
    this.authenticate = clusterAuthenticator({
      token: config.clusterToken ?? '',
      tls: config.tlsCert && config.tlsKey && config.tlsCa ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey), ca: readFileSync(config.tlsCa) } : undefined,
    });
  }

  get peerPort(): number | undefined {
    return this.listener?.port;
  }

  async start(): Promise<void> {
    const { config } = this.o;
    mkdirSync(config.imageDir, { recursive: true });
    this.removeStaleStages();
    this.listener = await listenForImageStreams({
      host: config.peerHost,
      port: config.peerPort,
      authenticate: this.authenticate,
      onConnection: (conn, remote) => this.track(this.receive(conn, remote)),
      onError: (err, remote) => this.logger.warn({ remote, err: err.message }, 'image stream refused'),
    });
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat().catch((err: unknown) => this.logger.warn({ err: describeError(err) }, 'heartbeat failed')), config.heartbeatMs);
    this.heartbeatTimer.unref();
    const workerOptions = { connection: this.connection, prefix: config.queuePrefix };
    this.noticeWorker = new Worker(NOTICES_QUEUE_NAME, (job: Job) => this.planJob(job), { ...workerOptions, concurrency: 4 });
    this.nodeWorker = new Worker(nodeQueueName(this.o.nodeId), (job: Job<NodeJob>) => this.nodeJob(job), { ...workerOptions, concurrency: 1 });
    for (const worker of [this.noticeWorker, this.nodeWorker]) worker.on('error', (err) => this.logger.warn({ err: describeError(err) }, 'queue worker error'));
    this.logger.info({ peer: `${config.peerHost}:${this.listener.port}`, imageDir: config.imageDir }, 'migration runtime ready');
    // Locate and check the engine now (CRIU: also its kernel-feature cache), so the first migration does not pay it.
    this.track(
      this.o.engine.capabilities({ deadline: Date.now() + 60_000 }).then((caps) => {
        if (caps.status !== 'ok') this.logger.warn({ code: caps.code, err: caps.message }, 'checkpoint engine check failed');
        else if (!caps.value.available) this.logger.warn({ engine: caps.value.engine, reason: caps.value.reason }, 'checkpoint engine unavailable on this node: its tasks cannot migrate');
        else this.logger.info({ engine: caps.value.engine, version: caps.value.version, ...caps.value.details }, 'checkpoint engine ready');
      }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await Promise.all([this.noticeWorker?.close(), this.nodeWorker?.close()]);
    await Promise.allSettled([...this.inflight]);
    await this.listener?.close();
    for (const queue of this.nodeQueues.values()) await queue.close();
    await this.registry.close();
  }

  // ---- registry ---------------------------------------------------------------------------------------------

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    const { config, identity } = this.o;
    const gpu = (await this.o.gpuInfo?.().catch(() => undefined)) ?? { model: '', count: 0, freeBytes: 0 };
    const node: NodeRecord = {
      id: this.o.nodeId,
      provider: identity.provider,
      instanceId: identity.instanceId,
      zone: identity.zone ?? '',
      capacityPool: config.capacityPool ?? `${identity.instanceType ?? 'unknown'}/${identity.zone ?? 'unknown'}`,
      lifecycle: identity.lifecycle,
      memTotalBytes: totalmem(),
      memFreeBytes: availableMemory(),
      gpuModel: gpu.model,
      gpuCount: gpu.count,
      gpuFreeBytes: gpu.freeBytes,
      draining: false,
      noticeId: '',
      peerAddress: `${config.advertiseHost ?? defaultAdvertiseHost(config.peerHost)}:${this.listener?.port ?? config.peerPort}`,
      heartbeatAt: Date.now(),
    };
    await this.registry.heartbeat(node, config.heartbeatMs * 3);
    await this.watchTasks(gpu.count > 0 ? gpu.model : '');
  }

  /**
   * Keeps this node's running tasks current: their memory as the kernel accounts it (the planner sizes
   * reservations and time estimates from it), and `exited` once the process is gone. A migrating task is the
   * migration's business.
   */
  private async watchTasks(gpuModel: string): Promise<void> {
    // Device memory per process, from the driver's own accounting (one nvidia-smi call for all tasks).
    const gpuByPid = gpuModel ? await gpuMemoryByPid().catch(() => undefined) : undefined;
    for (const task of await this.registry.tasksOnNode(this.o.nodeId)) {
      if (task.nodeId !== this.o.nodeId || task.state !== 'running') continue;
      if (!pidExists(task.pid)) {
        await this.registry.updateTask(task.id, { state: 'exited' });
        this.logger.info({ taskId: task.id, pid: task.pid }, 'task exited');
        continue;
      }
      const memBytes = await estimateImageBytes(task.pid).catch(() => 0);
      const patch: Partial<TaskRecord> = {};
      if (memBytes > 0 && Math.abs(memBytes - task.memBytes) > task.memBytes * 0.05) patch.memBytes = memBytes;
      if (gpuByPid) {
        const tree = await processTree(task.pid).catch(() => [task.pid]);
        const gpuMemBytes = tree.reduce((sum, pid) => sum + (gpuByPid.get(pid) ?? 0), 0);
        if (gpuMemBytes !== task.gpuMemBytes) patch.gpuMemBytes = gpuMemBytes;
        if (gpuMemBytes > 0 && task.gpuModel !== gpuModel) patch.gpuModel = gpuModel;
      }
      if (Object.keys(patch).length > 0) await this.registry.updateTask(task.id, patch);
    }
  }

  // ---- planning ------------------------------------------------------------------------------------------------

  private async planJob(job: Job): Promise<unknown> {
    const notice = noticeSchema.parse(job.data);
    const plan = await this.planner.planNotice(notice);
    this.o.metrics.noticePlansTotal.inc({ decision: plan.decision });
    for (const task of plan.tasks) {
      if (task.decision === 'fallback') this.o.metrics.migrationsTotal.inc({ outcome: 'fallback', reason: task.reason.split(':')[0] ?? 'unknown' });
    }
    return plan;
  }

  private async dispatch(nodeId: string, job: NodeJob): Promise<void> {
    let queue = this.nodeQueues.get(nodeId);
    if (!queue) {
      queue = new Queue(nodeQueueName(nodeId), { connection: this.connection, prefix: this.o.config.queuePrefix, defaultJobOptions: { removeOnComplete: { age: 24 * 3600 }, removeOnFail: { age: 7 * 24 * 3600 } } });
      this.nodeQueues.set(nodeId, queue);
    }
    await queue.add(job.type, job, { jobId: 'notice' in job ? `${job.type}-${job.notice.id}` : `${job.type}-${job.migrationId}` });
  }

  // ---- source side ---------------------------------------------------------------------------------------------

  private async nodeJob(job: Job<NodeJob>): Promise<void> {
    if (job.data.type === 'noticed') {
      this.o.onNoticed?.(job.data.notice);
      return;
    }
    if (job.data.type === 'drained') {
      const notice = job.data.notice;
      this.logger.info({ noticeId: notice.id }, 'every task of the notice is safe');
      await this.o.onDrained?.(notice).catch((err: unknown) => this.logger.warn({ noticeId: notice.id, err: describeError(err) }, 'after-drain step failed'));
      return;
    }
    const migration = await this.registry.getMigration(job.data.migrationId);
    if (!migration) throw new Error(`migration ${job.data.migrationId} is not in the registry`);
    const task = await this.registry.getTask(migration.taskId);
    if (!task) throw new Error(`task ${migration.taskId} of migration ${migration.id} is not in the registry`);
    if (job.data.type === 'fallback') return this.applyFallback(migration, task);
    return this.checkpoint(migration, task);
  }

  private async checkpoint(migration: MigrationRecord, task: TaskRecord): Promise<void> {
    if (migration.phase !== 'planned') {
      this.logger.info({ migrationId: migration.id, phase: migration.phase }, 'checkpoint job seen again; already under way or done');
      return;
    }
    let current = migration;
    let staged: StagedFiles | undefined;
    let stagedTried = false;
    for (;;) {
      const target = await this.registry.getNode(current.targetNodeId);
      const deadline = (current.deadline ?? Date.now() + 60_000) - DEADLINE_RESERVE_MS;
      if (!target?.peerAddress) {
        current = (await this.retryElsewhere(current, task, `target ${current.targetNodeId} is not in the registry`)) ?? current;
        if (current.phase !== 'planned') return;
        continue;
      }
      const [host, port] = splitHostPort(target.peerAddress);
      // One directory per attempt: a failed attempt's CRIU log stays for the post-mortem.
      const localDir = join(this.o.config.imageDir, `${current.id}-source-${current.targetsTried.length}`);
      await this.registry.updateMigration(current.id, { phase: 'checkpointing' });
      // Pre-copy with the task's help: it stages once per migration (while it keeps working), each target gets a copy.
      const stageUrl = task.control?.stageUrl;
      const stagePhases: Record<string, number> = {};
      if (stageUrl && !stagedTried) {
        stagedTried = true;
        staged = await this.stage(current, stageUrl, deadline);
        if (staged) stagePhases.stage = staged.stageMs;
      }
      let stagedOnTarget = false;
      if (staged) {
        const t = Date.now();
        stagedOnTarget = await this.sendStage(current, staged, host, port, target.id, deadline);
        stagePhases.stageSend = Date.now() - t;
      }
      let lastProgressWrite = 0;
      // Post-copy only where the pull can end well before the deadline (measured pull rate, or a slow default).
      let postCopy: boolean | undefined;
      if (this.o.config.postCopy) {
        const pull = postCopyFitsDeadline(task.memBytes, (await this.registry.rates()).pull, deadline - Date.now());
        if (!pull.fits) {
          postCopy = false;
          this.logger.info({ migrationId: current.id, bytes: task.memBytes, pullMs: pull.pullMs, msLeft: deadline - Date.now() }, 'post-copy skipped: pulling the memory would not end well before the deadline; the checkpoint streams it');
        }
      }
      const result = await this.o.engine.checkpoint({
        task: { kind: 'process', pid: task.pid, id: task.id, ...(task.control ? { control: task.control } : {}) },
        migrationId: current.id,
        destination: { kind: 'stream', sink: tcpImageSink({ host, port }, this.authenticate, `${target.id} ${target.peerAddress}`), localDir },
        ...(stagedOnTarget && staged ? { stagedDirectory: staged.directory } : {}),
        ...(postCopy === false ? { postCopy } : {}),
        deadline,
        onProgress: (event) => {
          // Progress for `spotwatch status`, at most every 200 ms.
          if (Date.now() - lastProgressWrite < 200) return;
          lastProgressWrite = Date.now();
          void this.registry.updateMigration(current.id, { phase: event.phase === 'transfer' || event.phase === 'dump' ? 'transferring' : 'checkpointing', bytesSent: event.bytes }).catch(() => {});
        },
      });
      if (result.status === 'ok') {
        const { value } = result;
        const stagedBytes = stagedOnTarget && staged ? staged.bytes : 0;
        await this.registry.updateMigration(current.id, {
          frozenAt: value.frozenAt,
          bytesSent: value.imageBytes,
          phases: prefixed('source', { ...stagePhases, ...value.phases }),
          ...(stagedBytes ? { stagedBytes } : {}),
          ...(value.dataPath ? { dataPath: value.dataPath } : {}),
        });
        this.o.metrics.bytesMovedTotal.inc(value.imageBytes + stagedBytes);
        for (const [phase, ms] of Object.entries(stagePhases)) this.o.metrics.migrationPhaseSeconds.observe({ phase: `source.${phase}` }, ms / 1000);
        // Dump and transfer are one pipelined stage (pages stream while CRIU writes them): one rate for both.
        const streamMs = (value.phases.dump ?? 0) + (value.phases.transfer ?? 0);
        if (streamMs > 0) {
          await this.registry.recordRate('stream', (value.imageBytes * 1000) / streamMs);
        }
        this.logger.info(
          { migrationId: current.id, taskId: task.id, target: target.id, bytes: value.imageBytes, ...(stagedBytes ? { stagedBytes } : {}), dataPath: value.dataPath, phases: value.phases },
          'checkpoint streamed and committed; the target restores it',
        );
        if (value.pagesSettled) this.track(this.afterPostCopy(current, task, value.pagesSettled, localDir));
        else pruneImage(localDir);
        if (staged) rmSync(staged.directory, { recursive: true, force: true });
        return;
      }
      const next = await this.checkpointFailed(current, task, result);
      if (!next) {
        // The task runs here again (resumed with the staged files, which it has read back) or is lost: either way
        // nothing needs them any more.
        if (staged) rmSync(staged.directory, { recursive: true, force: true });
        return;
      }
      current = next;
    }
  }

  /**
   * Post-copy: the target runs the task and pulls its memory from the frozen tree here. Once that is over the tree is
   * gone (recorded with the bytes pulled), or — the transfer failed — it runs here again, and the registry says so.
   */
  private async afterPostCopy(migration: MigrationRecord, task: TaskRecord, settled: NonNullable<CheckpointResult['pagesSettled']>, localDir: string): Promise<void> {
    const pages = await settled;
    pruneImage(localDir);
    const current = await this.registry.getMigration(migration.id);
    if (pages.ok) {
      this.o.metrics.bytesMovedTotal.inc(pages.bytes);
      if (pages.ms > 0 && pages.bytes > 0) await this.registry.recordRate('pull', (pages.bytes * 1000) / pages.ms);
      this.o.metrics.migrationPhaseSeconds.observe({ phase: 'source.postCopyPull' }, pages.ms / 1000);
      await this.registry.updateMigration(migration.id, { bytesSent: (current?.bytesSent ?? 0) + pages.bytes, postCopyBytes: pages.bytes, phases: { 'source.postCopyPull': pages.ms } });
      this.logger.info({ migrationId: migration.id, taskId: task.id, bytes: pages.bytes, ms: pages.ms }, 'post-copy: the target has all of the task\'s memory; the source copy is gone');
      return;
    }
    this.logger.warn({ migrationId: migration.id, taskId: task.id, err: pages.message }, 'post-copy transfer failed');
    await this.registry.updateTask(task.id, pages.taskState === 'running' ? { state: 'running', nodeId: this.o.nodeId, pid: task.pid } : { state: 'failed' });
    if (current && !current.outcome) await this.finish(current, 'failed', pages.message, { phase: 'failed' });
  }

  /** Asks the task to stage (task-stage.ts) within its share of the time left; undefined when it did not work out. */
  private async stage(migration: MigrationRecord, url: string, deadline: number): Promise<StagedFiles | undefined> {
    const directory = stagingDirectoryFor(this.o.config.imageDir, migration.id);
    const budgetMs = Math.max(0, Math.round((deadline - Date.now()) * STAGE_SHARE));
    try {
      const staged = await stageTask(url, migration.id, directory, deadline, budgetMs);
      this.logger.info({ migrationId: migration.id, files: staged.files, bytes: staged.bytes, ms: staged.stageMs }, 'task staged its state ahead of the checkpoint');
      return staged;
    } catch (err) {
      this.o.metrics.taskStagesTotal.inc({ outcome: 'stage-failed' });
      this.logger.warn({ migrationId: migration.id, err: describeError(err) }, 'staging failed; the checkpoint moves everything');
      rmSync(directory, { recursive: true, force: true });
      return undefined;
    }
  }

  /** Sends the staged files to the target, within the stage's share of the time left; false when they did not land. */
  private async sendStage(migration: MigrationRecord, staged: StagedFiles, host: string, port: number, targetId: string, deadline: number): Promise<boolean> {
    const signal = AbortSignal.timeout(Math.max(1, Math.round((deadline - Date.now()) * STAGE_SHARE)));
    let conn: Duplex | undefined;
    try {
      conn = await tcpImageSink({ host, port }, this.authenticate, targetId).open(signal);
      const open = conn;
      const onAbort = (): void => void open.destroy(new Error('the staged files were not sent in time'));
      signal.addEventListener('abort', onAbort, { once: true });
      const t = Date.now();
      try {
        await sendImageDirectory(open, staged.directory, migration.id, STAGE_MAGIC);
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
      this.logger.info({ migrationId: migration.id, target: targetId, bytes: staged.bytes, ms: Date.now() - t }, 'staged files sent to the target');
      this.o.metrics.taskStagesTotal.inc({ outcome: 'delivered' });
      return true;
    } catch (err) {
      conn?.destroy();
      this.o.metrics.taskStagesTotal.inc({ outcome: 'send-failed' });
      this.logger.warn({ migrationId: migration.id, target: targetId, err: describeError(err) }, 'sending the staged files failed; the checkpoint moves everything');
      return false;
    }
  }

  /** A failed checkpoint: the task keeps running here when the engine says so; try another target if time allows. */
  private async checkpointFailed(migration: MigrationRecord, task: TaskRecord, failure: EngineFailure): Promise<MigrationRecord | undefined> {
    this.logger.warn({ migrationId: migration.id, code: failure.code, taskState: failure.taskState, err: failure.message, log: failure.logPath }, 'checkpoint failed');
    await this.registry.release(migration.targetNodeId, migration.reservationId);
    if (failure.taskState === 'running') {
      await this.registry.updateTask(task.id, { state: 'running' });
      if (failure.status === 'retryable' && (failure.code === 'TRANSPORT_FAILED' || failure.code === 'RESTORE_CONFLICT')) {
        const next = await this.retryElsewhere(migration, task, `${failure.code}: ${failure.message}`);
        if (next?.phase === 'planned') return next;
        return undefined;
      }
      await this.finish(migration, 'failed', `${failure.code}: ${failure.message} (the task keeps running on ${this.o.nodeId})`, { phase: 'failed' });
      return undefined;
    }
    await this.registry.updateTask(task.id, { state: failure.taskState === 'gone' ? 'lost' : 'failed' });
    await this.finish(migration, 'failed', `${failure.code}: ${failure.message} (task ${failure.taskState ?? 'unknown'} on the source)`, { phase: 'failed' });
    return undefined;
  }

  /** Reserves another target for the same migration (excluding those tried) or applies the fallback. */
  private async retryElsewhere(migration: MigrationRecord, task: TaskRecord, why: string): Promise<MigrationRecord | undefined> {
    const reserved = await this.planner.reserveFor(task, migration.sourceNodeId, migration.id, migration.targetsTried);
    if (!reserved.nodeId) {
      await this.finish(migration, 'failed', `${why}; no other target has room`, { phase: 'failed' });
      return undefined;
    }
    this.logger.info({ migrationId: migration.id, previous: migration.targetNodeId, next: reserved.nodeId, why }, 'retrying the migration on another target');
    return this.registry.updateMigration(migration.id, {
      phase: 'planned',
      targetNodeId: reserved.nodeId,
      reservationId: reserved.reservationId,
      targetsTried: [...migration.targetsTried, reserved.nodeId],
      reason: why,
    });
  }

  private async applyFallback(migration: MigrationRecord, task: TaskRecord): Promise<void> {
    const deadline = (migration.deadline ?? Date.now() + 30_000) - DEADLINE_RESERVE_MS;
    if (task.fallback === 'stop') {
      signalAll([task.pid], 'SIGTERM');
      const gone = await waitGone([task.pid], Math.max(100, Math.min(10_000, deadline - Date.now())));
      if (!gone) signalAll([task.pid], 'SIGKILL');
      await this.registry.updateTask(task.id, { state: 'stopped' });
      await this.finish(migration, 'fallback-applied', `${migration.reason ?? ''}; stopped gracefully${gone ? '' : ' (SIGKILL after the grace period)'}`, { phase: 'fallback' });
      return;
    }
    if (task.fallback === 'checkpoint-to-storage') {
      const directory = join(this.o.config.storageDir, migration.id);
      const result: EngineResult<unknown> = await this.o.engine.checkpoint({
        task: { kind: 'process', pid: task.pid, id: task.id, ...(task.control ? { control: task.control } : {}) },
        migrationId: migration.id,
        destination: { kind: 'directory', path: directory },
        deadline,
      });
      if (result.status === 'ok') {
        await this.registry.updateTask(task.id, { state: 'checkpointed' });
        await this.finish(migration, 'fallback-applied', `${migration.reason ?? ''}; checkpointed to ${directory}`, { phase: 'fallback' });
      } else {
        await this.finish(migration, 'failed', `${migration.reason ?? ''}; checkpoint to storage failed: ${result.code}: ${result.message}`, { phase: 'failed' });
      }
    }
  }

  // ---- target side ---------------------------------------------------------------------------------------------

  private async receive(conn: Duplex, remote: string): Promise<void> {
    // A forwarded image (another target's restore failed) announces itself; anything else is a live dump stream.
    const head = await readExactly(conn, FORWARD_MAGIC.length);
    if (head.toString('utf8') === FORWARD_MAGIC) return this.receiveForwarded(conn, remote);
    if (head.toString('utf8') === STAGE_MAGIC) return this.receiveStaged(conn, remote);
    if (head.length > 0) conn.unshift(head);
    const incoming = join(this.o.config.imageDir, `incoming-${randomUUID()}`);
    // The migration's record is read while the image arrives, not after it (the task is down from the freeze on).
    let record: Promise<MigrationRecord | undefined> | undefined;
    const onHello = (id: string): void => {
      record = this.registry.getMigration(id);
      record.catch(() => undefined);
    };
    const received = await this.o.engine.receive({ connection: conn, directory: incoming, deadline: Date.now() + 30 * 60_000, onHello });
    if (received.status !== 'ok') {
      this.logger.warn({ remote, code: received.code, err: received.message }, 'image stream failed; the source keeps its task');
      rmSync(incoming, { recursive: true, force: true });
      return;
    }
    const migrationId = received.value.migrationId;
    const directory = join(this.o.config.imageDir, migrationId);
    rmSync(directory, { recursive: true, force: true });
    renameSync(incoming, directory);
    const migration = await (record ?? this.registry.getMigration(migrationId)).catch(() => this.registry.getMigration(migrationId));
    if (!migration) {
      this.logger.error({ migrationId, directory }, 'received an image for an unknown migration; kept on disk, not restored');
      return;
    }
    // The task is down until the restore runs: start it now, record the phase meanwhile (field-wise HSET, issued
    // before the restore's own updates on the same connection, so it cannot overwrite them).
    const noted = this.registry.updateMigration(migrationId, { phase: 'restoring', phases: { receive: received.durationMs } });
    noted.catch(() => undefined);
    await this.restore(migration, directory, received.value.imageBytes, noted);
  }

  private async receiveForwarded(conn: Duplex, remote: string): Promise<void> {
    const got = await this.receiveDirectory(conn, remote, (id) => join(this.o.config.imageDir, id), 'forwarded image');
    if (!got) return;
    const migration = await this.registry.getMigration(got.migrationId);
    if (!migration) {
      this.logger.error({ migrationId: got.migrationId, directory: got.directory }, 'received a forwarded image for an unknown migration; kept on disk, not restored');
      return;
    }
    this.logger.info({ migrationId: migration.id, from: remote, bytes: got.bytes }, 'forwarded image received; restoring');
    await this.registry.updateMigration(migration.id, { phase: 'restoring' });
    await this.restore(migration, got.directory, got.bytes);
  }

  /** Files a task staged ahead of its checkpoint: kept beside the images until the task resumes here. */
  private async receiveStaged(conn: Duplex, remote: string): Promise<void> {
    const got = await this.receiveDirectory(conn, remote, (id) => stagedDirectoryFor(this.o.config.imageDir, id), 'receiving staged files');
    if (!got) return;
    this.logger.info({ migrationId: got.migrationId, from: remote, bytes: got.bytes, files: got.files }, 'staged files received');
    // A checkpoint that then went to another target (or failed) never restores here: drop the files once every
    // restore of this migration is over (restores run until the deadline + 5 min).
    const deadline = (await this.registry.getMigration(got.migrationId).catch(() => undefined))?.deadline ?? Date.now();
    setTimeout(() => rmSync(got.directory, { recursive: true, force: true }), Math.max(0, deadline - Date.now()) + STAGED_KEPT_AFTER_DEADLINE_MS).unref();
  }

  /**
   * A directory transfer (image-forward.ts) from another agent: received beside the images, then moved to where
   * `place` puts that migration's files. A transfer that fails is answered `ERR` and leaves nothing behind.
   */
  private async receiveDirectory(
    conn: Duplex,
    remote: string,
    place: (migrationId: string) => string,
    what: string,
  ): Promise<{ migrationId: string; directory: string; bytes: number; files: number } | undefined> {
    const incoming = join(this.o.config.imageDir, `incoming-${randomUUID()}`);
    try {
      const { header, bytes } = await receiveImageDirectory(conn, incoming);
      const directory = place(header.migrationId);
      rmSync(directory, { recursive: true, force: true });
      renameSync(incoming, directory);
      return { migrationId: header.migrationId, directory, bytes, files: header.files.length };
    } catch (err) {
      this.logger.warn({ remote, err: describeError(err) }, `${what} failed`);
      conn.end(`ERR ${describeError(err).replace(/\n/g, ' ')}\n`);
      rmSync(incoming, { recursive: true, force: true });
      return undefined;
    }
  }

  /** Staged files and stage directories that no migration will use any more (left by a crash or a lost source). */
  private removeStaleStages(): void {
    const dir = this.o.config.imageDir;
    for (const name of readdirSync(dir)) {
      if (!name.endsWith('.staged') && !name.endsWith('.stage')) continue;
      const path = join(dir, name);
      try {
        if (Date.now() - statSync(path).mtimeMs > STALE_STAGE_MS) rmSync(path, { recursive: true, force: true });
      } catch {
        // gone meanwhile
      }
    }
  }

  /**
   * The restore here failed but the image is whole: send it on to another target (not tried yet, with room),
   * which restores it. Returns false when no target could take it.
   */
  private async forward(migration: MigrationRecord, task: TaskRecord, directory: string, why: string): Promise<boolean> {
    let current = migration;
    for (;;) {
      if (current.deadline !== undefined && Date.now() > current.deadline) return false;
      const reserved = await this.planner.reserveFor(task, current.sourceNodeId, current.id, current.targetsTried);
      if (!reserved.nodeId) return false;
      const target = await this.registry.getNode(reserved.nodeId);
      current =
        (await this.registry.updateMigration(current.id, {
          phase: 'transferring',
          targetNodeId: reserved.nodeId,
          reservationId: reserved.reservationId,
          targetsTried: [...current.targetsTried, reserved.nodeId],
          reason: why,
        })) ?? current;
      if (!target?.peerAddress) continue;
      try {
        const [host, port] = splitHostPort(target.peerAddress);
        const connect = () => tcpImageSink({ host, port }, this.authenticate, target.id).open(AbortSignal.timeout(30_000));
        const staged = stagedDirectoryFor(this.o.config.imageDir, current.id);
        // What the task staged goes first: it must be there when the restore's resume names it.
        if (existsSync(staged)) await sendImageDirectory(await connect(), staged, current.id, STAGE_MAGIC);
        const bytes = await sendImageDirectory(await connect(), directory, current.id);
        this.logger.info({ migrationId: current.id, to: target.id, bytes, why }, 'image forwarded to another target');
        pruneImage(directory);
        if (existsSync(staged)) rmSync(staged, { recursive: true, force: true });
        return true;
      } catch (err) {
        this.logger.warn({ migrationId: current.id, to: target.id, err: describeError(err) }, 'forwarding the image failed; trying another target');
        await this.registry.release(target.id, reserved.reservationId);
      }
    }
  }

  private async restore(migration: MigrationRecord, directory: string, imageBytes: number, noted?: Promise<unknown>): Promise<void> {
    const deadline = Math.max((migration.deadline ?? 0) + 5 * 60_000, Date.now() + 60_000);
    const staged = stagedDirectoryFor(this.o.config.imageDir, migration.id);
    const hasStaged = existsSync(staged);
    const result = await this.o.engine.restore({ migrationId: migration.id, source: { kind: 'directory', path: directory }, deadline, ...(hasStaged ? { stagedDirectory: staged } : {}) });
    // The task runs from here on (with a lazy restore its memory is still arriving: downtime ends now all the same).
    const restoredAt = Date.now();
    await noted?.catch(() => undefined);
    let fillFailed: string | undefined;
    let fillMs: number | undefined;
    if (result.status === 'ok' && result.value.memorySettled) {
      const settled = await result.value.memorySettled;
      fillMs = settled.ms;
      if (!settled.ok) fillFailed = settled.message;
    }
    const task = await this.registry.getTask(migration.taskId);
    if (result.status !== 'ok' || result.value.task.kind !== 'process' || fillFailed) {
      const code = result.status === 'ok' ? (fillFailed ? 'RESTORE_FAILED' : 'INTERNAL') : result.code;
      const why = result.status === 'ok' ? (fillFailed ? `RESTORE_FAILED: ${fillFailed}` : 'restored something that is not a process') : `${result.code}: ${result.message}`;
      const whole = result.status === 'ok' ? result.value.postCopy !== true : result.imageWhole !== false;
      await this.registry.release(this.o.nodeId, migration.reservationId);
      this.o.metrics.migrationsTotal.inc({ outcome: 'restore-failed', reason: code });
      const reason = `restore on ${this.o.nodeId} failed: ${why}`;
      if (!whole) {
        // Post-copy: the memory never left the source, which lets the task run again there and records that.
        this.logger.warn({ migrationId: migration.id, err: why }, 'post-copy restore failed; the source runs the task again');
        await this.finish(migration, 'failed', `${reason}; post-copy: the task's memory stayed on ${migration.sourceNodeId}, which runs it again`, { phase: 'failed' });
        return;
      }
      this.logger.warn({ migrationId: migration.id, err: why, log: result.status === 'ok' ? undefined : result.logPath }, 'restore failed; the image is whole, so it goes to another target');
      if (task && (await this.forward(migration, task, directory, reason))) return;
      await this.finish(migration, 'failed', `${reason}; no other target could take the image (kept in ${directory})`, { phase: 'failed' });
      if (task) await this.registry.updateTask(task.id, { state: 'failed' });
      return;
    }
    const newPid = result.value.task.pid;
    const targetPhases = { ...result.value.phases, ...(fillMs !== undefined ? { memoryFill: fillMs } : {}) };
    if (task) await this.registry.updateTask(task.id, { nodeId: this.o.nodeId, pid: newPid, state: 'running', migrations: task.migrations + 1, lastMigrationId: migration.id });
    await this.registry.release(this.o.nodeId, migration.reservationId);
    // The source records the freeze time once its checkpoint call returns; give it a moment to land.
    let frozenAt = (await this.registry.getMigration(migration.id))?.frozenAt;
    for (let i = 0; frozenAt === undefined && i < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      frozenAt = (await this.registry.getMigration(migration.id))?.frozenAt;
    }
    const downtimeMs = frozenAt !== undefined ? restoredAt - frozenAt : undefined;
    const restoreMs = result.value.phases.restore ?? result.durationMs;
    if (restoreMs > 0) await this.registry.recordRate('restore', (imageBytes * 1000) / restoreMs);
    // Keep the story of earlier attempts (a target that died or could not restore) in the reason.
    const earlier = (await this.registry.getMigration(migration.id))?.reason;
    await this.finish(migration, 'migrated', `restored on ${this.o.nodeId} as pid ${newPid}${earlier ? ` (after: ${earlier})` : ''}`, {
      phase: 'done',
      restoredAt,
      newPid,
      downtimeMs,
      phases: prefixed('target', targetPhases),
    });
    if (downtimeMs !== undefined) this.o.metrics.taskDowntimeSeconds.observe(downtimeMs / 1000);
    for (const [phase, ms] of Object.entries(targetPhases)) this.o.metrics.migrationPhaseSeconds.observe({ phase: `target.${phase}` }, ms / 1000);
    pruneImage(directory);
    // The task read its staged files back in its resume, which is part of the restore.
    if (hasStaged) rmSync(staged, { recursive: true, force: true });
    this.logger.info({ migrationId: migration.id, taskId: migration.taskId, newPid, downtimeMs }, 'task restored and running');
  }

  // ---- bookkeeping -------------------------------------------------------------------------------------------

  private async finish(migration: MigrationRecord, outcome: NonNullable<MigrationRecord['outcome']>, reason: string, patch: Partial<MigrationRecord>): Promise<void> {
    const finishedAt = Date.now();
    const marginMs = migration.deadline !== undefined ? migration.deadline - finishedAt : undefined;
    await this.registry.updateMigration(migration.id, { ...patch, outcome, reason, finishedAt, marginMs });
    this.o.metrics.migrationsTotal.inc({ outcome, reason: outcome === 'migrated' ? 'ok' : (reason.split(':')[0] ?? 'unknown').slice(0, 40) });
    if (marginMs !== undefined) this.o.metrics.deadlineMarginSeconds.observe(marginMs / 1000);
    const log = outcome === 'migrated' ? this.logger.info.bind(this.logger) : this.logger.warn.bind(this.logger);
    log({ migrationId: migration.id, taskId: migration.taskId, outcome, reason, marginMs }, `migration ${outcome}`);
  }

  private track<T>(work: Promise<T>): void {
    const tracked = work.catch((err: unknown) => this.logger.error({ err: describeError(err) }, 'migration step crashed'));
    this.inflight.add(tracked);
    void tracked.finally(() => this.inflight.delete(tracked));
  }
}

/**
 * Drops a finished migration's image data (it can be gigabytes) but keeps CRIU's logs and the manifest, the
 * record of what was done, in the migration's directory.
 */
function pruneImage(directory: string): void {
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch {
    return;
  }
  for (const name of names) if (!name.endsWith('.log') && !name.endsWith('.json')) rmSync(join(directory, name), { recursive: true, force: true });
}

function prefixed(prefix: string, phases: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(phases).map(([k, v]) => [`${prefix}.${k}`, v]));
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}

/** MemAvailable from /proc/meminfo (what can be given to a new task without swapping). */
export function availableMemory(): number {
  try {
    const kb = /MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
    return Number(kb) * 1024;
  } catch {
    return 0;
  }
}

function defaultAdvertiseHost(peerHost: string): string {
  if (peerHost !== '0.0.0.0' && peerHost !== '::') return peerHost;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
