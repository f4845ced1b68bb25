import { hostname } from 'node:os';
import type { Config } from '../config.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { Metrics } from '../metrics.js';
import type { Notice } from '../notice.js';
import type { CloudProvider, InstanceIdentity, NoticeWatcher } from '../provider.js';
import { BullmqNoticeQueue } from '../queue/bullmq-notice-queue.js';
import { NoticeDeliverer, type DeliveryOutcome } from '../queue/notice-deliverer.js';
import type { NoticeQueue } from '../queue/notice-queue.js';
import { NoticeSpool } from '../queue/spool.js';
import { startOpsServer, type OpsServer, type ReadinessCheck } from './http-server.js';
import type { CheckpointEngine } from '../engines/checkpoint-engine.js';
import { CriuEngine } from '../engines/criu/index.js';
import { CudaCheckpointHook, queryGpus } from '../engines/cuda/index.js';
import { TaskControlHook } from '../engines/task-control-hook.js';
import { NodeRuntime } from '../migration/node-runtime.js';
import type { NodeDrainer } from '../k8s/node-drainer.js';
import { procBootClock, type BootClock } from './boot-clock.js';
import { StaleDrainReleaser } from './stale-drain.js';
import { applyThpPolicy } from './transparent-hugepages.js';

/** The whole shutdown must fit in this (Kubernetes' and systemd's grace periods are longer). */
export const SHUTDOWN_BUDGET_MS = 5_000;

export interface AgentDeps {
  config: Config;
  provider: CloudProvider;
  endpoint: string;
  logger: Logger;
  /** Called after each notice is durably stored (or spooled); used by the demo to narrate. */
  onDelivered?: (notice: Notice, outcome: DeliveryOutcome, latencyMs: number) => void;
  /** The checkpoint engine for migrations (default: CRIU). */
  engine?: CheckpointEngine;
  /** Kubernetes actions on this node (cordon, taint, Event, eviction of pods that are not migrated). */
  drainer?: NodeDrainer | undefined;
  /** When this machine booted (and whether it slept since): /proc by default; tests play reboots with their own. */
  bootClock?: BootClock;
}

/**
 * The node agent: reads the node's identity, watches the metadata service, and gets every notice onto the
 * notices queue (or the spool while Redis is away) within milliseconds of seeing it.
 */
export class Agent {
  readonly metrics = new Metrics({ defaultMetrics: true });
  readonly nodeId: string;
  private readonly logger: Logger;
  private readonly queue: NoticeQueue;
  private readonly deliverer: NoticeDeliverer;
  private readonly watcher: NoticeWatcher;
  private readonly counted = new Set<string>();
  private readonly startAbort = new AbortController();
  private ops: OpsServer | undefined;
  private identityValue: InstanceIdentity | undefined;
  private runtime: NodeRuntime | undefined;
  private drainTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: AgentDeps) {
    const { config } = deps;
    this.nodeId = config.nodeId ?? hostname();
    this.logger = deps.logger.child({ nodeId: this.nodeId, provider: deps.provider.name });
    this.queue = new BullmqNoticeQueue({ redisUrl: config.redisUrl, prefix: config.queuePrefix });
    this.deliverer = new NoticeDeliverer(this.queue, new NoticeSpool(config.spoolPath, this.logger), this.metrics, this.logger);
    this.watcher = deps.provider.createWatcher({
      endpoint: deps.endpoint,
      pollIntervalMs: config.pollIntervalMs,
      requestTimeoutMs: config.requestTimeoutMs,
      instanceId: config.instanceId,
      imdsV1: config.imdsV1,
      logger: this.logger,
      metrics: this.metrics,
    });
  }

  get identity(): InstanceIdentity | undefined {
    return this.identityValue;
  }

  get httpPort(): number | undefined {
    return this.ops?.port;
  }

  /** Kubernetes actions for this node's notices (set before `start`). */
  setDrainer(drainer: NodeDrainer): void {
    this.deps.drainer = drainer;
  }

  /** The migration side (registry, planner, workers, image receiver), when `--migrate` is on. */
  get migration(): NodeRuntime | undefined {
    return this.runtime;
  }

  /** Serves /healthz at once, then reads the identity and starts watching. Resolves once the watcher runs. */
  async start(): Promise<void> {
    this.ops = await startOpsServer({
      host: this.deps.config.httpHost,
      port: this.deps.config.httpPort,
      registry: this.metrics.registry,
      readiness: () => this.readiness(),
      logger: this.logger,
    });
    this.deliverer.start();
    this.identityValue = await this.watcher.identity(this.startAbort.signal);
    this.logger.info({ identity: this.identityValue }, 'node identity');
    if (this.deps.config.migrate) {
      await this.tuneHugepages();
      this.runtime = new NodeRuntime({
        config: this.deps.config,
        nodeId: this.nodeId,
        identity: this.identityValue,
        // The CUDA hook only applies to tasks that hold a GPU (/dev/nvidia* open); CPU tasks go straight to CRIU.
        // Its up-front deadline check uses the same assumed rates as the planner (see --initial-rates).
        engine:
          this.deps.engine ??
          new CriuEngine({
            rates: { checkpointBytesPerSec: this.deps.config.initialRates.stream, restoreBytesPerSec: this.deps.config.initialRates.restore },
            // In order before the dump, in reverse after it: the task prepares while it can still use its GPU,
            // and resumes after the CUDA restore.
            hooks: [new TaskControlHook(), new CudaCheckpointHook({ checkpointBytesPerSec: this.deps.config.initialRates.gpu })],
            lazyRestore: this.deps.config.lazyRestore,
            postCopy: this.deps.config.postCopy,
            kerndatCache: this.deps.config.criuKdatCache,
            breakpoints: this.deps.config.criuBreakpoints,
          }),
        gpuInfo: nodeGpus,
        logger: this.logger,
        metrics: this.metrics,
        // A notice about this node that arrived through a webhook (or another agent) gets the same cluster actions.
        onNoticed: (notice) => {
          if (this.deps.drainer) this.track(this.actOnCluster(this.deps.drainer, notice));
        },
        onDrained: async (notice) => {
          if (!this.deps.provider.afterDrain) return;
          await this.deps.provider.afterDrain(this.deps.endpoint, notice);
          this.logger.info({ noticeId: notice.id, eventId: notice.eventId }, 'told the cloud the node is drained');
        },
      });
      await this.runtime.start();
      await this.startDrainRelease(this.runtime, this.identityValue.instanceId);
    }
    this.watcher.start((notice) => this.handle(notice));
    this.logger.info({ endpoint: this.deps.endpoint, pollIntervalMs: this.deps.config.pollIntervalMs }, 'watching for interruption notices');
  }

  /**
   * `--transparent-hugepages`: GPU checkpoints cross host memory four times, and with THP at `always` each
   * crossing faults 2 MiB pages instead of 4 KiB ones (1.8x shorter downtime measured on an H100). Node-wide, so
   * only set when asked; otherwise a GPU node where it is not `always` gets a warning saying what it costs.
   */
  private async tuneHugepages(): Promise<void> {
    const policy = this.deps.config.transparentHugepages;
    const gpus = policy === 'always' ? 0 : (await nodeGpus()).count;
    const r = await applyThpPolicy(policy, gpus);
    const fields = { policy, before: r.before, after: r.after, action: r.action };
    if (r.warn) this.logger.warn(fields, r.message);
    else this.logger.info(fields, r.message);
  }

  /** Stops watching, finishes in-flight deliveries and closes connections, within SHUTDOWN_BUDGET_MS. */
  async stop(): Promise<void> {
    this.startAbort.abort();
    if (this.drainTimer) clearInterval(this.drainTimer);
    const work = (async () => {
      await this.watcher.stop();
      await Promise.allSettled([...this.clusterWork]);
      await this.runtime?.stop();
      await this.deliverer.close();
      await this.queue.close();
      await this.ops?.close();
    })();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      work.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), SHUTDOWN_BUDGET_MS - 250);
      }),
    ]);
    clearTimeout(timer);
    if (!finished) this.logger.warn({ budgetMs: SHUTDOWN_BUDGET_MS }, 'shutdown did not finish in time; exiting anyway (spooled notices are kept on disk)');
    else this.logger.info('agent stopped');
  }

  async readiness(): Promise<ReadinessCheck> {
    const redis = await this.queue.ping();
    const health = this.watcher.health();
    const spoolDepth = this.deliverer.spoolDepth();
    return {
      ready: redis && health.alive,
      checks: {
        redis: { ok: redis, ...(redis ? {} : { detail: `Redis unreachable; ${spoolDepth} notice(s) spooled` }) },
        watcher: {
          ok: health.alive,
          detail: `last successful poll ${health.lastSuccessAt?.toISOString() ?? 'never'}, consecutive errors ${health.consecutiveErrors}`,
        },
      },
    };
  }

  /**
   * A node that comes back after an interruption (a stopped or hibernated spot instance started again, a
   * preempted VM restarted) still carries the drain of its old notice: lift it when that notice is over, now
   * and on every heartbeat tick (a resume from hibernation does not restart the agent).
   */
  private async startDrainRelease(runtime: NodeRuntime, instanceId: string): Promise<void> {
    let releaser: StaleDrainReleaser;
    try {
      releaser = new StaleDrainReleaser({ registry: runtime.registry, nodeId: this.nodeId, instanceId, clock: this.deps.bootClock ?? procBootClock, logger: this.logger, metrics: this.metrics });
    } catch (err) {
      // Without a boot time no drain can be told apart from a live one: leave them all to the planner.
      this.logger.warn({ err: describeError(err) }, 'boot time unknown: a drain left from an earlier interruption is not lifted');
      return;
    }
    await releaser.check();
    let running = false;
    this.drainTimer = setInterval(() => {
      if (running) return;
      running = true;
      void releaser.check().finally(() => (running = false));
    }, this.deps.config.heartbeatMs);
    this.drainTimer.unref();
  }

  private readonly clusterWork = new Set<Promise<void>>();

  private track(work: Promise<void>): void {
    this.clusterWork.add(work);
    void work.finally(() => this.clusterWork.delete(work));
  }

  /**
   * Cordon / taint / Event / evict on this node's Kubernetes Node, in the background (the notice is already
   * stored). Pods whose task is migrating are never evicted: an eviction mid-checkpoint would kill the task.
   */
  private async actOnCluster(drainer: NodeDrainer, notice: Notice): Promise<void> {
    try {
      const tasks = (await this.runtime?.registry.tasksOnNode(this.nodeId)) ?? [];
      const migratedPods = tasks.filter((t) => t.pod && (t.state === 'running' || t.state === 'migrating')).map((t) => t.pod!);
      const report = await drainer.onNotice(notice, { migratedPods });
      this.logger.info({ noticeId: notice.id, plan: report.plan, result: report.result, steps: report.steps.length, pods: report.pods.length }, 'Kubernetes actions done');
    } catch (err) {
      this.logger.warn({ noticeId: notice.id, err: describeError(err) }, 'Kubernetes actions failed');
    }
  }

  private async handle(notice: Notice): Promise<void> {
    if (!this.counted.has(notice.id)) {
      this.counted.add(notice.id);
      this.metrics.noticesTotal.inc({ provider: notice.provider, kind: notice.kind, source: notice.source });
    }
    try {
      const outcome = await this.deliverer.deliver(notice);
      const latencyMs = Date.now() - Date.parse(notice.detectedAt);
      this.logger.info({ noticeId: notice.id, kind: notice.kind, action: notice.action, deadline: notice.deadline, outcome, latencyMs }, 'notice enqueued');
      this.deps.onDelivered?.(notice, outcome, latencyMs);
      if (this.deps.drainer) this.track(this.actOnCluster(this.deps.drainer, notice));
    } catch (err) {
      // Only a failing spool (disk full, read-only) lands here: nothing else can keep the notice.
      this.metrics.enqueueTotal.inc({ result: 'failed' });
      this.logger.error({ noticeId: notice.id, err: describeError(err) }, 'notice could not be stored in Redis or the spool');
    }
  }
}

/** This node's GPUs for the registry (nvidia-smi); none when there is no NVIDIA driver. */
async function nodeGpus(): Promise<{ model: string; count: number; freeBytes: number }> {
  const gpus = (await queryGpus().catch(() => undefined)) ?? [];
  return { model: gpus[0]?.name ?? '', count: gpus.length, freeBytes: gpus.reduce((sum, g) => sum + g.memoryFreeBytes, 0) };
}
