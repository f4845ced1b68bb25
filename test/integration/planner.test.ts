import { afterAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { silentLogger } from '../../src/logger.js';
import { registryLookupFrom } from '../../src/lookup/instance-locator.js';
import { makeNotice, type Notice } from '../../src/notice.js';
import { Planner, migrationIdFor, type NodeJob } from '../../src/migration/planner.js';
import { Registry } from '../../src/registry/registry.js';
import { nodeRecord as node, taskRecord as task } from '../support/records.js';

const redisUrl = inject('redisUrl');
const GiB = 1024 ** 3;

const interruption = (instanceId: string, secondsLeft = 120): Notice =>
  makeNotice({ provider: 'aws', kind: 'interruption', action: 'terminate', instanceId, deadline: new Date(Date.now() + secondsLeft * 1000), detectedAt: new Date(), source: 'imds', identity: 'interruption-episode' });

describe('planner (real Redis, Lua reservations)', () => {
  let registry: Registry;
  let jobs: { nodeId: string; job: NodeJob }[];
  let planner: Planner;
  let prefix: string;
  const registries: Registry[] = [];
  beforeEach(() => {
    prefix = `p${randomBytes(4).toString('hex')}`;
    registry = new Registry(redisUrl, prefix);
    registries.push(registry);
    jobs = [];
    planner = new Planner({ registry, logger: silentLogger, dispatch: async (nodeId, job) => void jobs.push({ nodeId, job }) });
  });
  afterAll(async () => {
    for (const r of registries) await r.close();
  });

  it('drains the noticed node and prefers on-demand, then another pool, then another zone', async () => {
    await registry.heartbeat(node('a'), 30_000);
    await registry.heartbeat(node('same-pool'), 30_000);
    await registry.heartbeat(node('other-zone', { zone: 'us-east-1b', capacityPool: 'p5.48xlarge/us-east-1b' }), 30_000);
    await registry.heartbeat(node('on-demand', { lifecycle: 'on-demand' }), 30_000);
    await registry.putTask(task('t1', 'a'));
    const plan = await planner.planNotice(interruption('i-a'));
    expect(plan.decision).toBe('migrate');
    expect(plan.tasks).toMatchObject([{ taskId: 't1', decision: 'migrate', targetNodeId: 'on-demand' }]);
    expect(jobs.map((j) => [j.nodeId, j.job.type])).toEqual([
      ['a', 'noticed'],
      ['a', 'checkpoint'],
      ['a', 'drained'],
    ]);
    expect(jobs[1]!.job).toEqual({ type: 'checkpoint', migrationId: plan.tasks[0]!.migrationId });
    expect((await registry.getNode('a'))?.draining).toBe(true);
    expect((await registry.getTask('t1'))?.state).toBe('migrating');
    expect((await registry.reservedOn('on-demand')).memBytes).toBe(GiB);
    // Without the on-demand node, another zone wins over the same pool.
    await registry.heartbeat(node('b'), 30_000);
    await registry.putTask(task('t2', 'b'));
    await registry.removeNode('on-demand');
    const second = await planner.planNotice(interruption('i-b'));
    expect(second.tasks[0]?.targetNodeId).toBe('other-zone');
  });

  it('never picks a stale, draining or noticed node, and matches the GPU model', async () => {
    await registry.heartbeat(node('src', { gpuModel: 'NVIDIA H100 80GB HBM3', gpuFreeBytes: 0 }), 30_000);
    await registry.heartbeat(node('stale', { gpuModel: 'NVIDIA H100 80GB HBM3', gpuFreeBytes: 80 * GiB }), 1);
    await registry.heartbeat(node('a100', { gpuModel: 'NVIDIA A100-SXM4-80GB', gpuFreeBytes: 80 * GiB, lifecycle: 'on-demand' }), 30_000);
    await registry.heartbeat(node('h100', { gpuModel: 'NVIDIA H100 80GB HBM3', gpuFreeBytes: 40 * GiB }), 30_000);
    await registry.heartbeat(node('busy', { gpuModel: 'NVIDIA H100 80GB HBM3', gpuFreeBytes: 80 * GiB }), 30_000);
    await registry.setDraining('busy', true, 'other-notice');
    await registry.putTask(task('gpu', 'src', { gpuMemBytes: 16 * GiB, gpuModel: 'NVIDIA H100 80GB HBM3' }));
    await new Promise((r) => setTimeout(r, 5));
    const plan = await planner.planNotice(interruption('i-src', 3600));
    expect(plan.tasks[0]).toMatchObject({ decision: 'migrate', targetNodeId: 'h100' });
  });

  it('a task that releases its weights on prepare is planned on the bytes that move (plus their reload), not on all it holds', async () => {
    const h100 = { gpuModel: 'NVIDIA H100 80GB HBM3', gpuCount: 1 };
    await registry.heartbeat(node('src', { ...h100, gpuFreeBytes: 0 }), 30_000);
    await registry.heartbeat(node('dst', { ...h100, gpuFreeBytes: 80 * GiB }), 30_000);
    const gpuTask = { memBytes: GiB, gpuMemBytes: 20 * GiB, gpuModel: h100.gpuModel };
    await registry.putTask(task('whole', 'src', gpuTask));
    await registry.putTask(task('coop', 'src', { ...gpuTask, priority: 1, control: { prepareUrl: 'http://127.0.0.1:9/prepare', resumeUrl: 'http://127.0.0.1:9/resume', releasableBytes: 16 * GiB } }));
    // Default rates (200 MB/s streamed, 400 MB/s restore, 1 GB/s each CUDA stage), 120 s of notice: 21 GiB cannot
    // make it; 5 GiB moved plus 16 GiB reloaded can.
    const plan = await planner.planNotice(interruption('i-src', 120));
    const byTask = Object.fromEntries(plan.tasks.map((t) => [t.taskId, t]));
    expect(byTask.coop).toMatchObject({ decision: 'migrate', targetNodeId: 'dst' });
    expect(byTask.whole).toMatchObject({ decision: 'fallback' });
    expect(byTask.whole!.reason).toMatch(/does not fit/);
    const m = await registry.getMigration(byTask.coop!.migrationId);
    expect(m?.estimatedBytes).toBe(5 * GiB);
    // the target still needs room for all of it once the weights are back
    expect((await registry.reservedOn('dst')).gpuBytes).toBe(20 * GiB);
  });

  it('what a task stages ahead of the freeze counts in the time estimate at the stream rate', async () => {
    await registry.heartbeat(node('src'), 30_000);
    await registry.heartbeat(node('dst', { memFreeBytes: 64 * GiB }), 30_000);
    const control = { prepareUrl: 'http://127.0.0.1:9/prepare', resumeUrl: 'http://127.0.0.1:9/resume', releasableBytes: 4 * GiB };
    await registry.putTask(task('plain', 'src', { memBytes: 5 * GiB, control }));
    await registry.putTask(task('staged', 'src', { memBytes: 5 * GiB, control: { ...control, stageUrl: 'http://127.0.0.1:9/stage', stagedBytes: 4 * GiB } }));
    const plan = await planner.planNotice(interruption('i-src', 3600));
    const byTask = Object.fromEntries(plan.tasks.map((t) => [t.taskId, t]));
    expect(byTask.plain).toMatchObject({ decision: 'migrate' });
    expect(byTask.staged).toMatchObject({ decision: 'migrate' });
    // Same bytes in the image; 4 GiB more at the planner's default stream rate (200 MiB/s) before the freeze.
    expect(byTask.staged!.estimatedMs - byTask.plain!.estimatedMs).toBe((4 * GiB * 1000) / (200 * 1024 * 1024));
    expect((await registry.getMigration(byTask.staged!.migrationId))?.estimatedBytes).toBe(GiB);
  });

  it('applies the fallback and says why when the deadline is too close or no target has room', async () => {
    await registry.heartbeat(node('a'), 30_000);
    await registry.heartbeat(node('small', { memFreeBytes: 512 * 1024 * 1024 }), 30_000);
    await registry.putTask(task('big', 'a', { memBytes: 2 * GiB, priority: 5, fallback: 'stop' }));
    await registry.putTask(task('late', 'a', { memBytes: 100 * 1024 * 1024, priority: 1, fallback: 'none' }));
    const plan = await planner.planNotice(interruption('i-a', 3));
    const big = plan.tasks.find((t) => t.taskId === 'big')!;
    const late = plan.tasks.find((t) => t.taskId === 'late')!;
    expect(big.decision).toBe('fallback');
    expect(big.reason).toMatch(/deadline|no healthy node/);
    expect(late.decision).toBe('fallback');
    expect(jobs.filter((j) => j.job.type === 'fallback')).toEqual([{ nodeId: 'a', job: { type: 'fallback', migrationId: big.migrationId } }]);
    const record = await registry.getMigration(late.migrationId);
    expect(record).toMatchObject({ phase: 'fallback', fallback: 'none', outcome: 'fallback-applied' });
    expect(record?.reason).toBeTruthy();

    const roomy = new Planner({ registry, logger: silentLogger, dispatch: async () => {} });
    await registry.heartbeat(node('c'), 30_000);
    await registry.putTask(task('huge', 'c', { memBytes: 40 * GiB }));
    const none = await roomy.planNotice(interruption('i-c', 3600));
    expect(none.tasks[0]).toMatchObject({ decision: 'fallback' });
    expect(none.tasks[0]!.reason).toMatch(/no-target/);
  });

  it('plans a notice delivered twice only once, ignores rebalance by default, and undrains on cancel', async () => {
    await registry.heartbeat(node('a'), 30_000);
    await registry.heartbeat(node('b'), 30_000);
    await registry.putTask(task('t', 'a'));
    const notice = interruption('i-a');
    await planner.planNotice(notice);
    await registry.updateTask('t', { state: 'running' });
    const again = await planner.planNotice(notice);
    expect(again.tasks).toMatchObject([{ decision: 'skip' }]);
    expect(jobs.filter((j) => j.job.type === 'checkpoint')).toHaveLength(1);
    const rebalance = makeNotice({ provider: 'aws', kind: 'rebalance', action: 'none', instanceId: 'i-b', detectedAt: new Date(), source: 'imds' });
    expect((await planner.planNotice(rebalance)).decision).toBe('ignore');
    const cancel = makeNotice({ provider: 'aws', kind: 'cancelled', action: 'reboot', instanceId: 'i-a', detectedAt: new Date(), source: 'imds' });
    expect((await planner.planNotice(cancel)).decision).toBe('cancel');
    expect((await registry.getNode('a'))?.draining).toBe(false);
  });

  it('a late notice for the instance that used a node id before: nothing drained, dispatched or migrated, the lookup forgotten', async () => {
    const logs: { msg: string; nodeInstanceId?: string; lookupRemoved?: boolean }[] = [];
    const logged = new Planner({ registry, logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) }), dispatch: async (nodeId, job) => void jobs.push({ nodeId, job }) });
    // Instance i-old ran as node `a` and is gone; i-new took the node name (a Kubernetes node name, a hostname).
    await registry.heartbeat(node('a', { instanceId: 'i-old' }), 30_000);
    await registry.heartbeat(node('a', { instanceId: 'i-new' }), 30_000);
    await registry.heartbeat(node('b', { lifecycle: 'on-demand' }), 30_000);
    await registry.putTask(task('healthy', 'a'));
    expect(await registry.nodeByInstance('aws', 'i-old')).toBe('a');
    // The webhook's instance locator does not take the entry at its word either.
    expect(await registryLookupFrom(registry)('aws', 'i-old')).toBeUndefined();
    expect(await registryLookupFrom(registry)('aws', 'i-new')).toMatchObject({ nodeId: 'a' });

    // The interruption of i-old, delivered late (a bridge retry, a spool drained late).
    const late = interruption('i-old');
    const plan = await logged.planNotice(late);
    expect(plan).toEqual({
      noticeId: late.id,
      nodeId: 'a',
      decision: 'instance-replaced',
      nodeInstanceId: 'i-new',
      why: 'notice for instance i-old but node a now runs instance i-new: nothing to migrate',
      tasks: [],
    });
    expect(jobs).toEqual([]);
    expect(await registry.getNode('a')).toMatchObject({ draining: false, noticeId: '', instanceId: 'i-new' });
    expect(await registry.getTask('healthy')).toMatchObject({ state: 'running', lastMigrationId: '' });
    expect(await registry.migrationExists(migrationIdFor(late.id, 'healthy'))).toBe(false);
    expect(await registry.reservedOn('b')).toMatchObject({ count: 0 });
    expect(logs).toContainEqual(expect.objectContaining({ msg: plan.why, nodeInstanceId: 'i-new', lookupRemoved: true }));
    // The stale lookup entry is gone, the new instance's stays; a further retry finds no node at all.
    expect(await registry.nodeByInstance('aws', 'i-old')).toBeUndefined();
    expect(await registry.nodeByInstance('aws', 'i-new')).toBe('a');
    expect((await logged.planNotice(late)).decision).toBe('unknown-node');

    // The new machine's own notice is planned as ever.
    const own = await logged.planNotice(interruption('i-new'));
    expect(own).toMatchObject({ decision: 'migrate', nodeId: 'a', tasks: [{ taskId: 'healthy', decision: 'migrate', targetNodeId: 'b' }] });
    expect(jobs.map((j) => [j.nodeId, j.job.type])).toEqual([
      ['a', 'noticed'],
      ['a', 'checkpoint'],
      ['a', 'drained'],
    ]);
  });

  it('a late cancellation for the old instance leaves the new machine draining for its own notice', async () => {
    await registry.heartbeat(node('a', { instanceId: 'i-old' }), 30_000);
    await registry.heartbeat(node('a', { instanceId: 'i-new' }), 30_000);
    const own = interruption('i-new');
    expect((await planner.planNotice(own)).decision).toBe('migrate');
    const cancel = makeNotice({ provider: 'aws', kind: 'cancelled', action: 'reboot', instanceId: 'i-old', detectedAt: new Date(), source: 'eventbridge' });
    expect(await planner.planNotice(cancel)).toMatchObject({ decision: 'instance-replaced', nodeInstanceId: 'i-new' });
    expect(await registry.getNode('a')).toMatchObject({ draining: true, noticeId: own.id });
    expect(jobs.filter((j) => j.job.type === 'noticed').map((j) => (j.job as { notice: Notice }).notice.id)).toEqual([own.id]);
  });

  it('a new machine that heartbeats between the check and the drain is not drained (the drain re-checks atomically)', async () => {
    await registry.heartbeat(node('a', { instanceId: 'i-old' }), 30_000);
    await registry.heartbeat(node('b', { lifecycle: 'on-demand' }), 30_000);
    // The real registry, with the new machine's first heartbeat landing right after the planner read the record.
    const racing = new Registry(redisUrl, prefix, { redis: registry.redis });
    const getNode = racing.getNode.bind(racing);
    racing.getNode = async (id) => {
      const before = await getNode(id);
      await registry.heartbeat(node('a', { instanceId: 'i-new' }), 30_000);
      await registry.putTask(task('started-just-now', 'a'));
      return before;
    };
    const racer = new Planner({ registry: racing, logger: silentLogger, dispatch: async (nodeId, job) => void jobs.push({ nodeId, job }) });
    const plan = await racer.planNotice(interruption('i-old'));
    expect(plan).toMatchObject({ decision: 'instance-replaced', nodeInstanceId: 'i-new', tasks: [] });
    expect(jobs).toEqual([]);
    expect((await registry.getNode('a'))?.draining).toBe(false);
    expect(await registry.nodeByInstance('aws', 'i-old')).toBeUndefined();
  });

  it('a node whose heartbeat lapsed under the noticed instance is still planned; one with no record at all is not', async () => {
    // Its agent merely cut off from Redis for a moment: its queue keeps the jobs until it is back.
    await registry.heartbeat(node('quiet'), 1);
    await registry.heartbeat(node('b', { lifecycle: 'on-demand' }), 30_000);
    await registry.putTask(task('t', 'quiet'));
    await new Promise((r) => setTimeout(r, 10));
    expect((await registry.getNode('quiet'))?.healthy).toBe(false);
    expect(await planner.planNotice(interruption('i-quiet'))).toMatchObject({ decision: 'migrate', tasks: [{ taskId: 't', decision: 'migrate', targetNodeId: 'b' }] });
    // A record removed by hand: no agent has heartbeated since, nothing there could be checkpointed.
    await registry.heartbeat(node('gone'), 30_000);
    await registry.redis.del(`${prefix}:sw:node:gone`);
    const plan = await planner.planNotice(interruption('i-gone'));
    expect(plan).toMatchObject({ decision: 'unknown-node', nodeId: 'gone', tasks: [] });
    expect(plan.why).toMatch(/node gone of aws instance i-gone has no record/);
    expect(await registry.getNode('gone')).toBeUndefined();
    expect(await registry.nodeByInstance('aws', 'i-gone')).toBeUndefined();
  });

  it('never overcommits a target when many planners run at once', async () => {
    const targets = ['t1', 't2', 't3'];
    for (const id of targets) await registry.heartbeat(node(id, { memFreeBytes: 5 * GiB, lifecycle: 'on-demand' }), 30_000);
    const sources = Array.from({ length: 12 }, (_, i) => `s${i}`);
    for (const id of sources) {
      await registry.heartbeat(node(id), 30_000);
      for (let k = 0; k < 2; k++) await registry.putTask(task(`${id}-${k}`, id));
    }
    // 24 one-GiB tasks, 15 GiB of room: separate planners (separate snapshots) race for it.
    const planners = sources.map(() => new Planner({ registry, logger: silentLogger, dispatch: async () => {} }));
    const plans = await Promise.all(sources.map((id, i) => planners[i]!.planNotice(interruption(`i-${id}`, 3600))));
    const placed = plans.flatMap((p) => p.tasks).filter((t) => t.decision === 'migrate');
    expect(placed).toHaveLength(15);
    for (const id of targets) expect((await registry.reservedOn(id)).memBytes).toBe(5 * GiB);
  });
});
