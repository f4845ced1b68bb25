import { Redis } from 'ioredis';
import type { Lifecycle } from '../provider.js';
import { SpotwatchError } from '../errors.js';
import { FORGET_INSTANCE_SCRIPT, RELEASE_STALE_DRAIN_SCRIPT, SET_DRAINING_SCRIPT } from './drain-scripts.js';
import { RESERVE_SCRIPT } from './reserve-script.js';
import type { DrainCause, DrainWriteResult, MigrationRecord, NodeDrain, NodeRecord, NodeState, StaleDrainResult, TaskRecord } from './types.js';

/**
 * The cluster registry in Redis: nodes (heartbeat with a TTL), tasks, migrations, capacity reservations and
 * the transfer rates measured on earlier migrations. Every key lives under `<prefix>:sw:`.
 */
export class Registry {
  readonly redis: Redis;
  private readonly ns: string;

  constructor(redisUrl: string, prefix: string, options: { redis?: Redis } = {}) {
    this.redis = options.redis ?? new Redis(redisUrl, { maxRetriesPerRequest: 2, connectTimeout: 2000, retryStrategy: (n) => Math.min(100 * n, 2000) });
    this.redis.on('error', () => {});
    this.ns = `${prefix}:sw`;
    this.redis.defineCommand('spotwatchReserve', { lua: RESERVE_SCRIPT });
    this.redis.defineCommand('spotwatchSetDraining', { lua: SET_DRAINING_SCRIPT, numberOfKeys: 1 });
    this.redis.defineCommand('spotwatchReleaseStaleDrain', { lua: RELEASE_STALE_DRAIN_SCRIPT, numberOfKeys: 1 });
    this.redis.defineCommand('spotwatchForgetInstance', { lua: FORGET_INSTANCE_SCRIPT, numberOfKeys: 2 });
  }

  private key(...parts: string[]): string {
    return [this.ns, ...parts].join(':');
  }

  // ---- nodes ---------------------------------------------------------------------------------------------

  /** Writes the node record and refreshes its heartbeat (healthy for `ttlMs`). */
  async heartbeat(node: NodeRecord, ttlMs: number): Promise<void> {
    const flat: Record<string, string> = {};
    for (const [k, v] of Object.entries(node)) flat[k] = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
    // `draining` and `noticeId` are owned by the planner once set; a heartbeat never clears them. `healthy` and
    // `drain` are read-side views (a record read back and heartbeated again must not write them).
    delete flat.draining;
    delete flat.noticeId;
    delete flat.healthy;
    delete flat.drain;
    await this.redis
      .multi()
      .hset(this.key('node', node.id), flat)
      .hsetnx(this.key('node', node.id), 'draining', '0')
      .hsetnx(this.key('node', node.id), 'noticeId', '')
      .set(this.key('alive', node.id), String(node.heartbeatAt), 'PX', ttlMs)
      .sadd(this.key('nodes'), node.id)
      .set(this.key('instance', node.provider, node.instanceId), node.id)
      .exec();
  }

  /** The node's record, whether its heartbeat is live, and what drains it (when draining). */
  async getNode(id: string): Promise<NodeState | undefined> {
    const [[, hash], [, alive]] = (await this.redis.multi().hgetall(this.key('node', id)).exists(this.key('alive', id)).exec()) as [[null, Record<string, string>], [null, number]];
    if (!hash || Object.keys(hash).length === 0) return undefined;
    return nodeState(hash, alive === 1);
  }

  async listNodes(): Promise<NodeState[]> {
    const ids = (await this.redis.smembers(this.key('nodes'))).sort();
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.key('node', id)).exists(this.key('alive', id));
    const results = (await pipeline.exec()) ?? [];
    const nodes: NodeState[] = [];
    for (let i = 0; i < ids.length; i++) {
      const hash = results[i * 2]?.[1] as Record<string, string> | undefined;
      if (!hash || Object.keys(hash).length === 0) continue;
      nodes.push(nodeState(hash, results[i * 2 + 1]?.[1] === 1));
    }
    return nodes;
  }

  /**
   * The node an instance last heartbeated as. Only a hint: the entry outlives the instance (a node id reused by a
   * new machine leaves it pointing at the node), so check the node's record before acting on it (see
   * {@link setDraining}'s guard and {@link forgetInstance}).
   */
  async nodeByInstance(provider: string, instanceId: string): Promise<string | undefined> {
    return (await this.redis.get(this.key('instance', provider, instanceId))) ?? undefined;
  }

  /**
   * Removes the instance → node lookup entry of an instance that no longer runs as that node, atomically: only
   * while the entry still points to `nodeId` and the node's record names another instance or is gone. Returns
   * whether it was removed (false: already gone, re-pointed, or the instance heartbeated as the node again).
   */
  async forgetInstance(provider: string, instanceId: string, nodeId: string): Promise<boolean> {
    const removed = await (this.redis as unknown as DrainCommands).spotwatchForgetInstance(this.key('instance', provider, instanceId), this.key('node', nodeId), nodeId, instanceId);
    return removed === 1;
  }

  /**
   * Marks the node draining for a notice (it takes no new work), or takes work again (`draining` false: a
   * cancelled notice). `cause` records when and for which instance and deadline, so that the node, once it comes
   * back from the interruption, can lift a drain that is over (see {@link releaseStaleDrain}); without it the
   * node drains with no such record and stays draining until a cancellation.
   *
   * `guard.nodeRunsInstance`: write only while the node's record (its agent's last heartbeat) names that instance,
   * checked atomically with the write. A notice names an instance; its node id may since have passed to another
   * machine, which a late notice must neither drain nor undrain. Without a guard the write always happens.
   *
   * @throws SpotwatchError `REGISTRY_REPLY_INVALID` when Redis answers with something the script never returns.
   */
  async setDraining(nodeId: string, draining: boolean, noticeId: string, cause?: DrainCause, guard?: { nodeRunsInstance: string }): Promise<DrainWriteResult> {
    const at = cause?.at ?? Date.now();
    const deadline = cause?.deadline !== undefined && Number.isFinite(cause.deadline) ? String(Math.round(cause.deadline)) : '';
    const reply = await (this.redis as unknown as DrainCommands).spotwatchSetDraining(
      this.key('node', nodeId),
      draining ? '1' : '0',
      draining ? noticeId : '',
      draining && cause ? String(Math.round(at)) : '',
      draining ? deadline : '',
      draining ? (cause?.instanceId ?? '') : '',
      guard?.nodeRunsInstance ?? '',
    );
    const [verdict, instanceId] = Array.isArray(reply) ? (reply as unknown[]) : [];
    if (verdict === 'set') return { verdict };
    if (verdict === 'missing') return { verdict };
    if (verdict === 'other-instance' && typeof instanceId === 'string') return { verdict, instanceId };
    throw new SpotwatchError('REGISTRY_REPLY_INVALID', `setting the draining flag of node ${nodeId} got an unexpected reply from Redis: ${JSON.stringify(reply)}`);
  }

  /**
   * Lifts the node's drain when the notice behind it is over for this machine, atomically (a planner draining
   * the node for a live notice at the same moment always wins). Called by the node's own agent with its
   * instance id and the time since which the machine has run without interruption (boot or resume).
   *
   * Over means: the notice named another instance (a different machine now uses this node id), or the node was
   * drained before `awakeSince` and the notice's deadline, if any, also lies before it (the node went down for
   * the interruption and came back). `toleranceMs` absorbs clock skew between the planner and this machine.
   */
  async releaseStaleDrain(nodeId: string, self: { instanceId: string; awakeSince: number; toleranceMs: number }): Promise<StaleDrainResult> {
    const reply = (await (this.redis as unknown as DrainCommands).spotwatchReleaseStaleDrain(
      this.key('node', nodeId),
      self.instanceId,
      String(Math.floor(self.awakeSince)),
      String(Math.max(0, Math.round(self.toleranceMs))),
    )) as [string, string, string, string, string, string];
    const [verdict, noticeId, reason, since, deadline, instanceId] = reply;
    if (verdict !== 'cleared' && verdict !== 'kept') return { verdict: 'none' };
    const times = { ...(since ? { drainingSince: Number(since) } : {}), ...(deadline ? { deadline: Number(deadline) } : {}) };
    return verdict === 'cleared'
      ? { verdict, noticeId, reason: reason as 'over' | 'other-instance', instanceId, ...times }
      : { verdict, noticeId, reason: reason as 'current' | 'deadline-ahead' | 'unknown', instanceId, ...times };
  }

  async removeNode(nodeId: string): Promise<void> {
    await this.redis.multi().del(this.key('alive', nodeId)).srem(this.key('nodes'), nodeId).exec();
  }

  // ---- capacity reservations -------------------------------------------------------------------------------

  /**
   * Reserves `memBytes` (and `gpuBytes` of `gpuModel`) on the first candidate that has room, atomically.
   * Returns the chosen node id, or undefined with the reason each candidate was refused.
   */
  async reserve(args: {
    reservationId: string;
    candidates: string[];
    memBytes: number;
    gpuBytes: number;
    gpuModel: string;
    taskId: string;
    ttlMs: number;
  }): Promise<{ nodeId?: string; refused: Record<string, string> }> {
    if (args.candidates.length === 0) return { refused: {} };
    const keys = args.candidates.flatMap((id) => [this.key('node', id), this.key('alive', id), this.key('reservations', id)]);
    const now = Date.now();
    const reply = (await (this.redis as unknown as ReserveCommand).spotwatchReserve(
      keys.length,
      ...keys,
      args.reservationId,
      String(Math.ceil(args.memBytes)),
      String(Math.ceil(args.gpuBytes)),
      args.gpuModel,
      String(now),
      String(now + args.ttlMs),
      args.taskId,
    )) as [number, ...string[]];
    const [index, ...reasons] = reply;
    const refused: Record<string, string> = {};
    reasons.forEach((reason, i) => (refused[args.candidates[i]!] = reason));
    return index > 0 ? { nodeId: args.candidates[index - 1], refused } : { refused };
  }

  async release(nodeId: string, reservationId: string): Promise<void> {
    await this.redis.hdel(this.key('reservations', nodeId), reservationId);
  }

  /** Reserved bytes per node (unexpired), for `spotwatch status` and overcommit checks. */
  async reservedOn(nodeId: string): Promise<{ memBytes: number; gpuBytes: number; count: number }> {
    const all = await this.redis.hgetall(this.key('reservations', nodeId));
    let memBytes = 0;
    let gpuBytes = 0;
    let count = 0;
    const now = Date.now();
    for (const value of Object.values(all)) {
      const [m, g, e] = value.split('|').map(Number);
      if ((e ?? 0) <= now) continue;
      memBytes += m ?? 0;
      gpuBytes += g ?? 0;
      count++;
    }
    return { memBytes, gpuBytes, count };
  }

  // ---- tasks ---------------------------------------------------------------------------------------------

  /**
   * Tasks, like migrations, are hashes with one JSON-encoded field per property: the planner, the source agent
   * and the target agent each update their own fields without a read-modify-write race.
   */
  async putTask(task: TaskRecord): Promise<void> {
    const previousNode = await this.redis.hget(this.key('task', task.id), 'nodeId');
    const multi = this.redis.multi().hset(this.key('task', task.id), encodeRecord(task)).sadd(this.key('tasks'), task.id).sadd(this.key('node-tasks', task.nodeId), task.id);
    if (previousNode && JSON.parse(previousNode) !== task.nodeId) multi.srem(this.key('node-tasks', JSON.parse(previousNode) as string), task.id);
    await multi.exec();
  }

  /** Sets only the given fields (and `updatedAt`); moves the task between node sets when `nodeId` changes. */
  async updateTask(id: string, patch: Partial<TaskRecord>): Promise<void> {
    const key = this.key('task', id);
    const fields = encodeRecord({ ...patch, updatedAt: Date.now() });
    if (patch.nodeId === undefined) {
      // Only an existing task is updated (a Lua guard would cost more than this rare miss is worth).
      await this.redis.multi().hset(key, fields).exec();
      return;
    }
    const previousNode = await this.redis.hget(key, 'nodeId');
    const multi = this.redis.multi().hset(key, fields).sadd(this.key('node-tasks', patch.nodeId), id);
    if (previousNode && JSON.parse(previousNode) !== patch.nodeId) multi.srem(this.key('node-tasks', JSON.parse(previousNode) as string), id);
    await multi.exec();
  }

  async getTask(id: string): Promise<TaskRecord | undefined> {
    const hash = await this.redis.hgetall(this.key('task', id));
    return Object.keys(hash).length === 0 ? undefined : (decodeRecord(hash) as unknown as TaskRecord);
  }

  async tasksOnNode(nodeId: string): Promise<TaskRecord[]> {
    return this.getTasks(await this.redis.smembers(this.key('node-tasks', nodeId)));
  }

  async listTasks(): Promise<TaskRecord[]> {
    return this.getTasks(await this.redis.smembers(this.key('tasks')));
  }

  private async getTasks(ids: string[]): Promise<TaskRecord[]> {
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.key('task', id));
    const results = (await pipeline.exec()) ?? [];
    return results
      .map(([, hash]) => hash as Record<string, string>)
      .filter((h) => Object.keys(h).length > 0)
      .map((h) => decodeRecord(h) as unknown as TaskRecord)
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  // ---- migrations -------------------------------------------------------------------------------------------

  /**
   * Migrations are hashes with one JSON-encoded field per property (and `phases.<name>` per phase), so the
   * source and the target can update their own fields at the same time without losing each other's writes.
   */
  async putMigration(m: MigrationRecord): Promise<void> {
    await this.redis.multi().hset(this.key('migration', m.id), encodeRecord(m)).zadd(this.key('migrations'), m.plannedAt, m.id).exec();
  }

  async migrationExists(id: string): Promise<boolean> {
    return (await this.redis.exists(this.key('migration', id))) === 1;
  }

  async getMigration(id: string): Promise<MigrationRecord | undefined> {
    const hash = await this.redis.hgetall(this.key('migration', id));
    return Object.keys(hash).length === 0 ? undefined : ({ phases: {}, ...decodeRecord(hash) } as unknown as MigrationRecord);
  }

  /** Sets only the given fields (phases are merged, never replaced). */
  async updateMigration(id: string, patch: Partial<MigrationRecord>): Promise<MigrationRecord | undefined> {
    if (!(await this.redis.exists(this.key('migration', id)))) return undefined;
    await this.redis.hset(this.key('migration', id), encodeRecord(patch));
    return this.getMigration(id);
  }

  /** The most recent migrations, newest first. */
  async recentMigrations(limit = 50): Promise<MigrationRecord[]> {
    const ids = await this.redis.zrevrange(this.key('migrations'), 0, limit - 1);
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.key('migration', id));
    const results = (await pipeline.exec()) ?? [];
    return results.map(([, hash]) => hash as Record<string, string>).filter((h) => Object.keys(h).length > 0).map((h) => ({ phases: {}, ...decodeRecord(h) }) as unknown as MigrationRecord);
  }

  // ---- measured rates ---------------------------------------------------------------------------------------

  /** Bytes per second of each stage, as measured on earlier migrations (exponentially weighted). */
  async rates(): Promise<Record<string, number>> {
    const all = await this.redis.hgetall(this.key('rates'));
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, Number(v)]));
  }

  async recordRate(stage: string, bytesPerSecond: number): Promise<void> {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return;
    const current = Number((await this.redis.hget(this.key('rates'), stage)) ?? NaN);
    const next = Number.isFinite(current) ? 0.7 * current + 0.3 * bytesPerSecond : bytesPerSecond;
    await this.redis.hset(this.key('rates'), stage, String(Math.round(next)));
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

interface ReserveCommand {
  spotwatchReserve(numKeys: number, ...args: string[]): Promise<unknown>;
}

interface DrainCommands {
  spotwatchSetDraining(key: string, ...args: string[]): Promise<unknown>;
  spotwatchReleaseStaleDrain(key: string, ...args: string[]): Promise<unknown>;
  spotwatchForgetInstance(lookupKey: string, nodeKey: string, ...args: string[]): Promise<unknown>;
}

function nodeState(hash: Record<string, string>, healthy: boolean): NodeState {
  const node = parseNode(hash);
  return node.draining ? { ...node, healthy, drain: parseDrain(hash, node.noticeId) } : { ...node, healthy };
}

/** The drain's record (see drain-scripts.ts); fields an older spotwatch did not write stay absent. */
function parseDrain(h: Record<string, string>, noticeId: string): NodeDrain {
  const ms = (k: string) => (h[k] && Number.isFinite(Number(h[k])) ? Number(h[k]) : undefined);
  const drain: NodeDrain = { noticeId };
  const since = ms('drainingSince');
  const deadline = ms('drainingDeadline');
  if (since !== undefined) drain.since = since;
  if (deadline !== undefined) drain.deadline = deadline;
  if (h.drainingInstanceId) drain.instanceId = h.drainingInstanceId;
  return drain;
}

function parseNode(h: Record<string, string>): NodeRecord {
  const num = (k: string) => Number(h[k] ?? 0);
  return {
    id: h.id ?? '',
    provider: h.provider ?? '',
    instanceId: h.instanceId ?? '',
    zone: h.zone ?? '',
    capacityPool: h.capacityPool ?? '',
    lifecycle: (h.lifecycle ?? 'unknown') as Lifecycle,
    memTotalBytes: num('memTotalBytes'),
    memFreeBytes: num('memFreeBytes'),
    gpuModel: h.gpuModel ?? '',
    gpuCount: num('gpuCount'),
    gpuFreeBytes: num('gpuFreeBytes'),
    draining: h.draining === '1',
    noticeId: h.noticeId ?? '',
    peerAddress: h.peerAddress ?? '',
    heartbeatAt: num('heartbeatAt'),
  };
}

/** One JSON-encoded hash field per property; a `phases` object becomes `phases.<name>` fields (merged on update). */
function encodeRecord(m: object): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if (k === 'phases') for (const [phase, ms] of Object.entries(v as Record<string, number>)) flat[`phases.${phase}`] = JSON.stringify(ms);
    else flat[k] = JSON.stringify(v);
  }
  return flat;
}

function decodeRecord(hash: Record<string, string>): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(hash)) {
    if (k.startsWith('phases.')) ((m.phases ??= {}) as Record<string, number>)[k.slice(7)] = JSON.parse(v) as number;
    else m[k] = JSON.parse(v) as unknown;
  }
  return m;
}
