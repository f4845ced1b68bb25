import { createHash, randomUUID } from 'node:crypto';
import { releasedOnPrepare } from '../engines/checkpoint-engine.js';
import type { Logger } from '../logger.js';
import type { Notice } from '../notice.js';
import type { Registry } from '../registry/registry.js';
import type { MigrationRecord, NodeRecord, TaskRecord } from '../registry/types.js';
import { decide, DEFAULT_POLICY, type MigrationPolicy } from './policy.js';

/** Work the planner hands to one node's queue. */
export type NodeJob =
  | { type: 'checkpoint'; migrationId: string }
  | { type: 'fallback'; migrationId: string }
  /** Queued after every task job of a notice: the node's queue runs jobs in order, so it runs once all are done. */
  | { type: 'drained'; notice: Notice }
  /** Queued first: the noticed node learns of a notice that reached the queue another way (a webhook). */
  | { type: 'noticed'; notice: Notice };

export interface PlannerOptions {
  registry: Registry;
  logger: Logger;
  /** Puts a job on the node's own queue. */
  dispatch(nodeId: string, job: NodeJob): Promise<void>;
  policy?: MigrationPolicy;
  /** Time kept free before the deadline (restore verification, clock skew). */
  safetyMarginMs?: number;
  /** Window assumed for a notice that must migrate but carries no deadline. */
  noDeadlineWindowMs?: number;
  /**
   * Stage rates (bytes/s) before any migration was measured: `stream` is the dump and the transfer together
   * (pages go to the target while CRIU writes them), `restore` the CRIU restore, `gpu` the CUDA checkpoint and
   * restore of device memory (added for GPU bytes only).
   */
  defaultRates?: { stream: number; restore: number; gpu: number };
  /** Fixed cost of one migration (process start of CRIU, handshakes, verification). */
  fixedCostMs?: number;
  /** How long a reservation holds if nobody releases it. */
  reservationTtlMs?: number;
  /** How many ranked targets one reservation attempt offers the script. */
  candidatesPerAttempt?: number;
}

export interface TaskPlan {
  taskId: string;
  migrationId: string;
  decision: 'migrate' | 'fallback' | 'skip';
  targetNodeId?: string;
  reason: string;
  estimatedMs: number;
}

/**
 * What the planner made of a notice. `decision` is a stable code: `migrate` (node drained, tasks planned),
 * `ignore` (policy: e.g. a rebalance recommendation), `cancel` (node takes work again), `unknown-node` (no node
 * is registered for the instance, or its record is gone), `instance-replaced` (the node id now belongs to another
 * instance, `nodeInstanceId`: the notice is about a machine that is gone — nothing drained, nothing migrated).
 */
export interface NoticePlan {
  noticeId: string;
  nodeId?: string;
  decision: 'migrate' | 'ignore' | 'cancel' | 'unknown-node' | 'instance-replaced';
  why: string;
  tasks: TaskPlan[];
  /** With `instance-replaced`: the instance the node runs now. */
  nodeInstanceId?: string;
}

const MB = 1024 * 1024;
// Only the order of candidates comes from the snapshot (the reservation script re-checks every one), so it may
// be a little stale; reloading thousands of nodes per notice would cost more than it saves.
const SNAPSHOT_MAX_AGE_MS = 2000;

/**
 * Turns a notice into migrations: marks the node draining, ranks healthy targets, reserves capacity atomically,
 * checks each task's estimated checkpoint + transfer + restore time against the time left (higher priority
 * first, one after the other on the source), and dispatches checkpoint jobs — or the task's fallback, with the
 * reason recorded. Idempotent per notice: a notice planned twice (at-least-once delivery) plans nothing new.
 */
export class Planner {
  private snapshot: { at: number; nodes: (NodeRecord & { healthy: boolean })[]; byId: Map<string, NodeRecord & { healthy: boolean }> } | undefined;
  private snapshotLoad: Promise<(NodeRecord & { healthy: boolean })[]> | undefined;
  private readonly o: Required<Omit<PlannerOptions, 'registry' | 'logger' | 'dispatch'>> & Pick<PlannerOptions, 'registry' | 'logger' | 'dispatch'>;

  constructor(options: PlannerOptions) {
    this.o = {
      policy: DEFAULT_POLICY,
      safetyMarginMs: 2000,
      noDeadlineWindowMs: 30_000,
      // Conservative: this project's measurements reach 300 MB/s streamed and 0.5–1.5 GB/s for restores and
      // the CUDA stages (bench/migrate, bench/gpu); each cluster's own rates replace these after one migration.
      defaultRates: { stream: 200 * MB, restore: 400 * MB, gpu: 1000 * MB },
      fixedCostMs: 1500,
      reservationTtlMs: 10 * 60_000,
      candidatesPerAttempt: 8,
      ...options,
    };
  }

  /**
   * Plans one notice (see the class). The notice names an instance; the node it maps to must still run that
   * instance, or the notice is about a machine that is gone — a node id (Kubernetes node name, hostname,
   * `--node-id`) reused by a new instance, and a notice for the old one delivered late (bridge retries, a spool
   * drained late). Then nothing is drained, dispatched or migrated (`instance-replaced`) and the stale lookup
   * entry is removed. The check is repeated atomically with the drain, so a new machine's first heartbeat cannot
   * slip in between.
   *
   * Which instance a node runs is what its agent last heartbeated, live or not: a node whose heartbeat merely
   * lapsed (its agent cut off from Redis for a moment) under the noticed instance is planned as before — its
   * jobs wait on its queue, reservations expire if nobody runs them. A node with no record at all has had no agent
   * since it was removed (every heartbeat rewrites it), so nothing of it could be checkpointed: `unknown-node`,
   * and the lookup entry goes too.
   */
  async planNotice(notice: Notice, now = Date.now()): Promise<NoticePlan> {
    const { decision, why } = decide(notice, this.o.policy);
    const nodeId = await this.o.registry.nodeByInstance(notice.provider, notice.instanceId);
    if (!nodeId) return { noticeId: notice.id, decision: 'unknown-node', why: `no agent has registered ${notice.provider} instance ${notice.instanceId}`, tasks: [] };
    const source = await this.o.registry.getNode(nodeId);
    if (source?.instanceId !== notice.instanceId) return this.instanceGone(notice, nodeId, source?.instanceId);
    const guard = { nodeRunsInstance: notice.instanceId };
    if (decision === 'cancel') {
      const undrained = await this.o.registry.setDraining(nodeId, false, '', undefined, guard);
      if (undrained.verdict !== 'set') return this.instanceGone(notice, nodeId, undrained.verdict === 'other-instance' ? undrained.instanceId : undefined);
      await this.o.dispatch(nodeId, { type: 'noticed', notice });
      return { noticeId: notice.id, nodeId, decision, why: `${why}: node ${nodeId} takes work again`, tasks: [] };
    }
    if (decision === 'ignore') {
      await this.o.dispatch(nodeId, { type: 'noticed', notice });
      return { noticeId: notice.id, nodeId, decision, why, tasks: [] };
    }

    // When, and for which instance and deadline: the node's agent, back after the interruption (a stopped or
    // preempted instance started again), lifts a drain that is over instead of idling forever.
    const drained = await this.o.registry.setDraining(nodeId, true, notice.id, { instanceId: notice.instanceId, deadline: notice.deadline ? Date.parse(notice.deadline) : undefined, at: now }, guard);
    if (drained.verdict !== 'set') return this.instanceGone(notice, nodeId, drained.verdict === 'other-instance' ? drained.instanceId : undefined);
    // After the guarded drain, so a notice about a machine that is gone never reaches (cordons) the new one.
    await this.o.dispatch(nodeId, { type: 'noticed', notice });
    const deadline = notice.deadline ? Date.parse(notice.deadline) : now + this.o.noDeadlineWindowMs;
    const tasks = (await this.o.registry.tasksOnNode(nodeId))
      .filter((t) => t.nodeId === nodeId && t.state === 'running')
      .sort((a, b) => b.priority - a.priority || a.startedAt - b.startedAt);
    const rates = { ...this.o.defaultRates, ...(await this.o.registry.rates()) };
    const nodes = await this.nodes(now);

    const plans: TaskPlan[] = [];
    // Checkpoints on one source run one after the other, so each task's finish time includes those before it.
    let busyUntil = now;
    for (const task of tasks) {
      const migrationId = migrationIdFor(notice.id, task.id);
      if (await this.o.registry.migrationExists(migrationId)) {
        plans.push({ taskId: task.id, migrationId, decision: 'skip', reason: 'already planned for this notice', estimatedMs: 0 });
        continue;
      }
      // A task that releases memory on prepare (its weights, say) moves less, and reloads that much after the restore
      // (counted at the GPU rate: host → device is the copy it shares with the CUDA restore).
      const released = Math.min(releasedOnPrepare(task.control), task.memBytes + task.gpuMemBytes);
      const bytes = task.memBytes + task.gpuMemBytes - released;
      const gpuMoved = Math.max(0, task.gpuMemBytes - released);
      const estimatedMs =
        this.o.fixedCostMs +
        (1000 * bytes) / rates.stream +
        (1000 * bytes) / rates.restore +
        (gpuMoved > 0 ? (2000 * gpuMoved) / rates.gpu : 0) +
        (released > 0 ? (1000 * released) / rates.gpu : 0) +
        // What the task stages travels before the freeze, but inside the notice window.
        (task.control?.stageUrl ? (1000 * Math.max(0, task.control.stagedBytes ?? 0)) / rates.stream : 0);
      const base: MigrationRecord = {
        id: migrationId,
        noticeId: notice.id,
        taskId: task.id,
        sourceNodeId: nodeId,
        targetNodeId: '',
        reservationId: '',
        phase: 'planned',
        deadline,
        estimatedMs: Math.round(estimatedMs),
        estimatedBytes: bytes,
        bytesSent: 0,
        plannedAt: now,
        phases: {},
        targetsTried: [],
      };
      const finishAt = busyUntil + estimatedMs;
      if (finishAt > deadline - this.o.safetyMarginMs) {
        const reason = `estimated ${Math.round(estimatedMs)} ms (after ${Math.round(busyUntil - now)} ms of higher-priority work) does not fit the ${Math.round(deadline - now)} ms left before the deadline`;
        plans.push(await this.fallback(base, task, 'deadline', reason));
        continue;
      }
      const reservationId = `${migrationId}:${randomUUID().slice(0, 8)}`;
      const reserved = await this.reserveAmong(this.candidates(nodes, source, task), reservationId, task);
      if (!reserved.nodeId) {
        const refusedIds = Object.keys(reserved.refused);
        const refused = refusedIds.slice(0, 5).map((id) => `${id}: ${reserved.refused[id]}`).join(', ');
        const reason = refusedIds.length === 0 ? 'no healthy node with room for it' : `every candidate refused (${refused}${refusedIds.length > 5 ? `, and ${refusedIds.length - 5} more` : ''})`;
        plans.push(await this.fallback(base, task, 'no-target', reason));
        continue;
      }
      busyUntil = finishAt;
      // The record and the task state must exist before the job can run; the two writes are independent.
      await Promise.all([
        this.o.registry.putMigration({ ...base, targetNodeId: reserved.nodeId, reservationId, targetsTried: [reserved.nodeId] }),
        this.o.registry.updateTask(task.id, { state: 'migrating', lastMigrationId: migrationId }),
      ]);
      await this.o.dispatch(nodeId, { type: 'checkpoint', migrationId });
      plans.push({ taskId: task.id, migrationId, decision: 'migrate', targetNodeId: reserved.nodeId, reason: `reserved on ${reserved.nodeId}`, estimatedMs });
    }
    await this.o.dispatch(nodeId, { type: 'drained', notice });
    this.o.logger.info({ noticeId: notice.id, nodeId, tasks: plans }, 'notice planned');
    return { noticeId: notice.id, nodeId, decision: 'migrate', why, tasks: plans };
  }

  /**
   * The notice's instance no longer runs as `nodeId` (`current`: the instance the node's record names now;
   * undefined: the node has no record). Plans nothing, and removes the lookup entry that led here.
   */
  private async instanceGone(notice: Notice, nodeId: string, current: string | undefined): Promise<NoticePlan> {
    const lookupRemoved = await this.o.registry.forgetInstance(notice.provider, notice.instanceId, nodeId);
    const fields = { noticeId: notice.id, provider: notice.provider, instanceId: notice.instanceId, nodeId, nodeInstanceId: current, lookupRemoved };
    if (current === undefined) {
      const why = `node ${nodeId} of ${notice.provider} instance ${notice.instanceId} has no record (no agent runs there): nothing to migrate`;
      this.o.logger.warn(fields, why);
      return { noticeId: notice.id, nodeId, decision: 'unknown-node', why, tasks: [] };
    }
    const why = `notice for instance ${notice.instanceId} but node ${nodeId} now runs instance ${current}: nothing to migrate`;
    this.o.logger.warn(fields, why);
    return { noticeId: notice.id, nodeId, decision: 'instance-replaced', why, tasks: [], nodeInstanceId: current };
  }

  /** Reserves capacity for a task on the best target that has room, excluding `exclude` (for retries). */
  async reserveFor(task: TaskRecord, sourceNodeId: string, migrationId: string, exclude: string[]): Promise<{ nodeId?: string; reservationId: string; refused: Record<string, string> }> {
    const nodes = await this.nodes(Date.now(), true);
    const source = await this.o.registry.getNode(sourceNodeId);
    const reservationId = `${migrationId}:${randomUUID().slice(0, 8)}`;
    return { ...(await this.reserveAmong(this.candidates(nodes, source, task, exclude), reservationId, task)), reservationId };
  }

  private async reserveAmong(candidates: Iterator<string>, reservationId: string, task: TaskRecord): Promise<{ nodeId?: string; refused: Record<string, string> }> {
    const refused: Record<string, string> = {};
    // Offer the script a few candidates at a time; it takes the first that still has room.
    for (;;) {
      const batch: string[] = [];
      for (let next = candidates.next(); !next.done; next = candidates.next()) {
        batch.push(next.value);
        if (batch.length === this.o.candidatesPerAttempt) break;
      }
      if (batch.length === 0) return { refused };
      const result = await this.o.registry.reserve({
        reservationId,
        candidates: batch,
        memBytes: task.memBytes,
        gpuBytes: task.gpuMemBytes,
        gpuModel: task.gpuMemBytes > 0 ? task.gpuModel : '',
        taskId: task.id,
        ttlMs: this.o.reservationTtlMs,
      });
      Object.assign(refused, result.refused);
      this.learn(task, result);
      if (result.nodeId) return { nodeId: result.nodeId, refused };
    }
  }

  /**
   * Targets for a task, best first, lazily: healthy, not draining, not noticed (as of the snapshot — the
   * reservation script checks again), room for the task, the same GPU model for a GPU task. Preference:
   * on-demand first, then another capacity pool, then another zone; among equally preferred targets the order
   * is rotated at random, so concurrent planners spread out instead of all contending for the same node.
   */
  *candidates(nodes: (NodeRecord & { healthy: boolean })[], source: NodeRecord | undefined, task: TaskRecord, exclude: string[] = []): Generator<string> {
    for (const group of this.preferenceGroups(nodes, source)) {
      const start = Math.floor(Math.random() * group.length);
      for (let i = 0; i < group.length; i++) {
        const n = group[(start + i) % group.length]!;
        // Re-checked here: what reservations taught this planner since the snapshot (see learn()).
        if (!n.healthy || n.draining || n.noticeId !== '') continue;
        if (n.id === task.nodeId || exclude.includes(n.id) || n.memFreeBytes < task.memBytes) continue;
        if (task.gpuMemBytes > 0 && (n.gpuModel !== task.gpuModel || n.gpuFreeBytes < task.gpuMemBytes)) continue;
        yield n.id;
      }
    }
  }

  /**
   * Folds a reservation's answer into the snapshot, so later tasks skip what the script just refused: a node
   * under notice or gone stale, one without room for this size, and the room this reservation took.
   */
  private learn(task: TaskRecord, result: { nodeId?: string; refused: Record<string, string> }): void {
    const byId = this.snapshot?.byId;
    if (!byId) return;
    for (const [id, reason] of Object.entries(result.refused)) {
      const n = byId.get(id);
      if (!n) continue;
      if (reason === 'unhealthy') n.healthy = false;
      else if (reason === 'draining') n.draining = true;
      else if (reason === 'noticed') n.noticeId = 'unknown';
      else if (reason === 'memory') n.memFreeBytes = Math.min(n.memFreeBytes, task.memBytes - 1);
      else if (reason === 'gpu-memory') n.gpuFreeBytes = Math.min(n.gpuFreeBytes, task.gpuMemBytes - 1);
    }
    const chosen = result.nodeId ? byId.get(result.nodeId) : undefined;
    if (chosen) {
      chosen.memFreeBytes -= task.memBytes;
      chosen.gpuFreeBytes -= task.gpuMemBytes;
    }
  }

  private groupCache = new WeakMap<object, Map<string, (NodeRecord & { healthy: boolean })[][]>>();

  /** Eligible nodes grouped by preference score, highest first; computed once per snapshot and source pool/zone. */
  private preferenceGroups(nodes: (NodeRecord & { healthy: boolean })[], source: NodeRecord | undefined): (NodeRecord & { healthy: boolean })[][] {
    let bySource = this.groupCache.get(nodes);
    if (!bySource) this.groupCache.set(nodes, (bySource = new Map()));
    const key = `${source?.capacityPool ?? ''}|${source?.zone ?? ''}`;
    const cached = bySource.get(key);
    if (cached) return cached;
    const score = (n: NodeRecord) =>
      (n.lifecycle === 'on-demand' ? 4 : 0) + (source && n.capacityPool !== source.capacityPool ? 2 : 0) + (source && n.zone !== source.zone ? 1 : 0);
    const groups = new Map<number, (NodeRecord & { healthy: boolean })[]>();
    for (const n of nodes) {
      if (!n.healthy || n.draining || n.noticeId !== '') continue;
      const s = score(n);
      const group = groups.get(s);
      if (group) group.push(n);
      else groups.set(s, [n]);
    }
    const ordered = [...groups.entries()].sort((a, b) => b[0] - a[0]).map(([, g]) => g);
    bySource.set(key, ordered);
    return ordered;
  }

  private async fallback(base: MigrationRecord, task: TaskRecord, code: string, reason: string): Promise<TaskPlan> {
    await this.o.registry.putMigration({ ...base, phase: 'fallback', fallback: task.fallback, reason: `${code}: ${reason}` });
    await this.o.registry.updateTask(task.id, { lastMigrationId: base.id });
    this.o.logger.warn({ taskId: task.id, migrationId: base.id, fallback: task.fallback, reason }, 'task cannot be migrated in time; applying its fallback');
    if (task.fallback === 'none') {
      await this.o.registry.updateMigration(base.id, { outcome: 'fallback-applied', finishedAt: Date.now() });
    } else {
      await this.o.dispatch(base.sourceNodeId, { type: 'fallback', migrationId: base.id });
    }
    return { taskId: task.id, migrationId: base.id, decision: 'fallback', reason: `${code}: ${reason}; fallback ${task.fallback}`, estimatedMs: base.estimatedMs };
  }

  private async nodes(now: number, fresh = false): Promise<(NodeRecord & { healthy: boolean })[]> {
    if (!fresh && this.snapshot && now - this.snapshot.at < SNAPSHOT_MAX_AGE_MS) return this.snapshot.nodes;
    this.snapshotLoad ??= this.o.registry.listNodes().finally(() => {
      this.snapshotLoad = undefined;
    });
    const nodes = await this.snapshotLoad;
    if (this.snapshot?.nodes !== nodes) this.snapshot = { at: Date.now(), nodes, byId: new Map(nodes.map((n) => [n.id, n])) };
    return nodes;
  }
}

/** One migration per (notice, task): a re-delivered notice finds it and plans nothing new. */
export function migrationIdFor(noticeId: string, taskId: string): string {
  return `m-${createHash('sha256').update(`${noticeId}|${taskId}`).digest('hex').slice(0, 16)}`;
}
