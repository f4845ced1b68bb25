/**
 * A node drained by an interruption that is over (a stopped / hibernated spot instance started again, a
 * preempted VM restarted) takes work again once its agent is back; a node under its current run's notice does
 * not. Real parts: redis-server, the AWS metadata emulator, in-process agents with the migration runtime, the
 * planner and its Lua reservations. Only the machine's boot clock is played by the test.
 */
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Agent } from '../../src/agent/agent.js';
import { fixedBootClock, type BootClock } from '../../src/agent/boot-clock.js';
import { DRAIN_CLOCK_TOLERANCE_MS } from '../../src/agent/stale-drain.js';
import { silentLogger } from '../../src/logger.js';
import { Planner } from '../../src/migration/planner.js';
import { makeNotice, type Notice } from '../../src/notice.js';
import { BullmqNoticeQueue } from '../../src/queue/bullmq-notice-queue.js';
import { Registry } from '../../src/registry/registry.js';
import type { NodeRecord, TaskRecord } from '../../src/registry/types.js';
import { awsProvider } from '../../providers/aws/index.js';
import { agentHarness, waitFor, type AgentHarness } from '../support/agent-harness.js';
import { nodeRecord, taskRecord } from '../support/records.js';

const redisUrl = inject('redisUrl');
const MiB = 1024 ** 2;
const INSTANCE = 'i-0123456789abcdef0';

const node = (id: string, extra: Partial<NodeRecord> = {}): NodeRecord => nodeRecord(id, { capacityPool: 'm5.xlarge/us-east-1a', ...extra });
// Small, and let go at the deadline: it must fit the agent's node, whatever this machine has free.
const task = (id: string, nodeId: string): TaskRecord => taskRecord(id, nodeId, { memBytes: 16 * MiB, fallback: 'none' });

const interruption = (instanceId: string): Notice =>
  makeNotice({ provider: 'aws', kind: 'interruption', action: 'terminate', instanceId, deadline: new Date(Date.now() + 120_000), detectedAt: new Date(), source: 'imds', identity: 'interruption-episode' });

async function releasedCount(agent: Agent, reason: string): Promise<number> {
  return (await agent.metrics.drainReleasedTotal.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

async function planCount(agent: Agent, decision: string): Promise<number> {
  return (await agent.metrics.noticePlansTotal.get()).values.find((v) => v.labels.decision === decision)?.value ?? 0;
}

describe('a drained node that comes back (real Redis, AWS emulator, agents with the migration runtime)', () => {
  let harness: AgentHarness | undefined;
  let registry: Registry | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await harness?.close();
    await registry?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    harness = registry = dir = undefined;
  });

  async function setup(): Promise<{ harness: AgentHarness; registry: Registry; planner: Planner; start(clock: BootClock): Promise<Agent> }> {
    dir = mkdtempSync(join(tmpdir(), 'spotwatch-drain-'));
    harness = await agentHarness(awsProvider, redisUrl, {
      emulator: { instanceId: INSTANCE },
      config: {
        pollIntervalMs: '100',
        requestTimeoutMs: '300',
        migrate: 'true',
        clusterToken: randomBytes(16).toString('hex'),
        peerHost: '127.0.0.1',
        peerPort: '0',
        heartbeatMs: '200',
        imageDir: join(dir, 'images'),
        storageDir: join(dir, 'storage'),
      },
    });
    registry = new Registry(redisUrl, harness.prefix);
    const planner = new Planner({ registry, logger: silentLogger, dispatch: async () => {} });
    const h = harness;
    return { harness: h, registry, planner, start: (clock) => h.startAgent({}, { bootClock: clock }) };
  }

  /** The agent's own planner (its notice worker) drains node-a for the emulator's interruption; gives the job id. */
  async function interruptAndDrain(h: AgentHarness, r: Registry, action: 'stop' | 'hibernate'): Promise<string> {
    await h.control('interrupt', { action, timeLeft: 0 });
    const jobs = await waitFor('the interruption job', 5000, async () => {
      const found = await h.jobs();
      return found.length > 0 ? found : undefined;
    });
    await waitFor('node-a to drain', 5000, async () => ((await r.getNode('node-a'))?.draining ? true : undefined));
    expect((await r.getNode('node-a'))?.noticeId).toBe(jobs[0]!.id);
    return jobs[0]!.id;
  }

  /** A spot node elsewhere with one task, interrupted: where does the planner put the task? */
  async function placeTaskFrom(r: Registry, planner: Planner, source: string) {
    await r.heartbeat(node(source, { zone: 'us-east-1b', capacityPool: 'm5.xlarge/us-east-1b' }), 30_000);
    await r.putTask(task(`${source}-task`, source));
    const plan = await planner.planNotice(interruption(`i-${source}`));
    return plan.tasks[0]!;
  }

  it('a node drained by an earlier episode takes work again after a reboot, and the planner places a task on it', async () => {
    const { harness: h, registry: r, planner, start } = await setup();
    const first = await start(fixedBootClock(Date.now() - 3_600_000));
    await interruptAndDrain(h, r, 'stop');

    // While drained, the node is no target: the task gets its fallback.
    const before = await placeTaskFrom(r, planner, 'node-c');
    expect(before.decision).toBe('fallback');

    // The instance stops at its deadline (now), and is started again later: a new boot, same node and instance id.
    await first.stop();
    await h.control('clear-interruption');
    await new Promise((resolve) => setTimeout(resolve, DRAIN_CLOCK_TOLERANCE_MS + 300));
    const second = await start(fixedBootClock(Date.now()));

    // The check runs before start() resolves.
    const back = await r.getNode('node-a');
    expect(back).toMatchObject({ draining: false, noticeId: '', healthy: true, instanceId: INSTANCE });
    expect(await releasedCount(second, 'rebooted')).toBe(1);
    expect(await r.releaseStaleDrain('node-a', { instanceId: INSTANCE, awakeSince: Date.now(), toleranceMs: 0 })).toEqual({ verdict: 'none' });

    const after = await placeTaskFrom(r, planner, 'node-d');
    expect(after).toMatchObject({ decision: 'migrate', targetNodeId: 'node-a' });
  });

  it('a late notice for the instance that had this node id before drains nothing: the agent\'s planner plans nothing', async () => {
    const { harness: h, registry: r, start } = await setup();
    // i-0old ran as node-a (its lookup entry is left behind), then this machine took the node id.
    await r.heartbeat(node('node-a', { instanceId: 'i-0old' }), 30_000);
    const agent = await start(fixedBootClock(Date.now() - 3_600_000));
    await r.heartbeat(node('node-c', { lifecycle: 'on-demand' }), 30_000);
    // A live process of this machine (were it migrated, only a `sleep` would move).
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    await r.putTask({ ...task('served', 'node-a'), pid: sleeper.pid! });
    const queue = new BullmqNoticeQueue({ redisUrl, prefix: h.prefix });
    try {
      const late = interruption('i-0old');
      expect((await queue.store(late)).outcome).toBe('created');
      await waitFor('the late notice planned', 5000, async () => ((await planCount(agent, 'instance-replaced')) === 1 ? true : undefined));
    } finally {
      await queue.close();
      sleeper.kill();
    }
    expect(await r.getNode('node-a')).toMatchObject({ draining: false, noticeId: '', instanceId: INSTANCE });
    expect(await r.getTask('served')).toMatchObject({ state: 'running', nodeId: 'node-a', lastMigrationId: '' });
    expect(await r.recentMigrations()).toEqual([]);
    expect(await r.nodeByInstance('aws', 'i-0old')).toBeUndefined();
    expect(await planCount(agent, 'migrate')).toBe(0);
    expect(await releasedCount(agent, 'other-instance')).toBe(0);
  });

  it('a node draining under its current boot\'s notice stays draining, across an agent restart and heartbeats', async () => {
    const { harness: h, registry: r, planner, start } = await setup();
    const clock = fixedBootClock(Date.now() - 3_600_000);
    const first = await start(clock);
    const noticeId = await interruptAndDrain(h, r, 'stop');
    await first.stop();
    // The agent restarts (same boot), after the notice's deadline: the interruption has not happened to this run.
    const second = await start(clock);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // five heartbeat ticks
    expect(await r.getNode('node-a')).toMatchObject({ draining: true, noticeId, healthy: true });
    expect(await releasedCount(second, 'rebooted')).toBe(0);
    const placed = await placeTaskFrom(r, planner, 'node-c');
    expect(placed.decision).toBe('fallback');
  });

  it('a hibernated node that resumes (same boot, same agent) takes work again', async () => {
    const { harness: h, registry: r, start } = await setup();
    const boot = Date.now() - 3_600_000;
    let slept = 0;
    const clock: BootClock = { bootTime: () => boot, sinceBootMs: () => Date.now() - boot, monotonicMs: () => Date.now() - boot - slept };
    const agent = await start(clock);
    await interruptAndDrain(h, r, 'hibernate');
    await new Promise((resolve) => setTimeout(resolve, DRAIN_CLOCK_TOLERANCE_MS + 300));
    expect((await r.getNode('node-a'))?.draining).toBe(true);
    await h.control('clear-interruption');
    // The machine slept ten minutes (CLOCK_BOOTTIME jumps ahead of CLOCK_MONOTONIC); the agent's next tick sees it.
    slept = 600_000;
    await waitFor('the resumed node to take work again', 3000, async () => ((await r.getNode('node-a'))?.draining === false ? true : undefined));
    expect(await releasedCount(agent, 'resumed')).toBe(1);
  });
});

describe('registry: which drains are over (real Redis, Lua)', () => {
  const registries: Registry[] = [];
  afterAll(async () => {
    for (const r of registries) await r.close();
  });
  const fresh = async () => {
    const r = new Registry(redisUrl, `d${randomBytes(4).toString('hex')}`);
    registries.push(r);
    await r.heartbeat(node('a', { instanceId: 'i-new' }), 30_000);
    return r;
  };
  const now = Date.now();

  it('a drain for another instance (the node id now belongs to another machine) is lifted', async () => {
    const r = await fresh();
    await r.setDraining('a', true, 'aws-old', { instanceId: 'i-old', deadline: now + 60_000, at: now });
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now - 3_600_000, toleranceMs: 2000 })).toMatchObject({ verdict: 'cleared', reason: 'other-instance', noticeId: 'aws-old' });
    expect(await r.getNode('a')).toMatchObject({ draining: false, noticeId: '' });
  });

  it('a guarded drain writes only while the node runs the notice\'s instance, and says which it runs', async () => {
    const r = await fresh();
    const cause = { instanceId: 'i-old', deadline: now + 60_000, at: now };
    expect(await r.setDraining('a', true, 'aws-old', cause, { nodeRunsInstance: 'i-old' })).toEqual({ verdict: 'other-instance', instanceId: 'i-new' });
    expect(await r.getNode('a')).toMatchObject({ draining: false, noticeId: '' });
    expect(await r.setDraining('nobody', true, 'aws-old', cause, { nodeRunsInstance: 'i-old' })).toEqual({ verdict: 'missing' });
    expect(await r.getNode('nobody')).toBeUndefined();
    expect(await r.setDraining('a', true, 'aws-new', { ...cause, instanceId: 'i-new' }, { nodeRunsInstance: 'i-new' })).toEqual({ verdict: 'set' });
    expect(await r.getNode('a')).toMatchObject({ draining: true, noticeId: 'aws-new', drain: { noticeId: 'aws-new', since: now, deadline: now + 60_000, instanceId: 'i-new' } });
    // A cancellation for the old instance does not undrain the new one either.
    expect(await r.setDraining('a', false, '', undefined, { nodeRunsInstance: 'i-old' })).toMatchObject({ verdict: 'other-instance' });
    expect((await r.getNode('a'))?.draining).toBe(true);
  });

  it('forgets an instance\'s lookup entry only while it points to the node and the node runs another instance', async () => {
    const r = await fresh();
    await r.heartbeat(node('a', { instanceId: 'i-old' }), 30_000);
    await r.heartbeat(node('a', { instanceId: 'i-new' }), 30_000);
    expect(await r.forgetInstance('aws', 'i-new', 'a')).toBe(false);
    expect(await r.forgetInstance('aws', 'i-old', 'b')).toBe(false);
    expect(await r.forgetInstance('aws', 'i-old', 'a')).toBe(true);
    expect(await r.nodeByInstance('aws', 'i-old')).toBeUndefined();
    expect(await r.nodeByInstance('aws', 'i-new')).toBe('a');
    // The old instance heartbeats as the node again (it was not gone after all): its entry stays.
    await r.heartbeat(node('a', { instanceId: 'i-old' }), 30_000);
    expect(await r.forgetInstance('aws', 'i-old', 'a')).toBe(false);
    expect(await r.nodeByInstance('aws', 'i-old')).toBe('a');
  });

  it('keeps a drain whose deadline is still ahead (an unrelated reboot before scheduled maintenance)', async () => {
    const r = await fresh();
    await r.setDraining('a', true, 'aws-maint', { instanceId: 'i-new', deadline: now + 3_600_000, at: now - 600_000 });
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now - 300_000, toleranceMs: 2000 })).toMatchObject({ verdict: 'kept', reason: 'deadline-ahead' });
    expect((await r.getNode('a'))?.draining).toBe(true);
  });

  it('keeps a drain that does not say when it was set, and one set within the clock tolerance of the boot', async () => {
    const r = await fresh();
    await r.setDraining('a', true, 'aws-legacy');
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now, toleranceMs: 2000 })).toMatchObject({ verdict: 'kept', reason: 'unknown' });
    await r.setDraining('a', true, 'aws-early', { instanceId: 'i-new', at: now - 1000 });
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now, toleranceMs: 2000 })).toMatchObject({ verdict: 'kept', reason: 'current' });
  });

  it('a notice drained again keeps the time it first drained the node; a cancellation clears it all', async () => {
    const r = await fresh();
    await r.setDraining('a', true, 'aws-x', { instanceId: 'i-new', deadline: now - 500_000, at: now - 600_000 });
    // Re-delivered after the node came back: still the old episode, still over.
    await r.setDraining('a', true, 'aws-x', { instanceId: 'i-new', deadline: now - 500_000, at: now });
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now - 60_000, toleranceMs: 2000 })).toEqual({
      verdict: 'cleared',
      reason: 'over',
      noticeId: 'aws-x',
      instanceId: 'i-new',
      drainingSince: now - 600_000,
      deadline: now - 500_000,
    });
    await r.setDraining('a', true, 'aws-y', { instanceId: 'i-new', at: now });
    await r.setDraining('a', false, '');
    expect(await r.releaseStaleDrain('a', { instanceId: 'i-new', awakeSince: now + 60_000, toleranceMs: 0 })).toEqual({ verdict: 'none' });
  });
});
