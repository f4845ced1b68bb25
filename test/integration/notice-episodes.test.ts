import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { randomBytes, randomUUID } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { awsParsers } from '../../providers/aws/parsers.js';
import { gcpParsers } from '../../providers/gcp/parsers.js';
import { azureParsers } from '../../providers/azure/parsers.js';
import { silentLogger } from '../../src/logger.js';
import { Planner, migrationIdFor, type NoticePlan } from '../../src/migration/planner.js';
import { noticeSchema, type Notice } from '../../src/notice.js';
import { BullmqNoticeQueue } from '../../src/queue/bullmq-notice-queue.js';
import { NOTICES_QUEUE_NAME } from '../../src/queue/notice-queue.js';
import { Registry } from '../../src/registry/registry.js';
import type { NodeRecord } from '../../src/registry/types.js';
import { awsAgentHarness, waitFor, type AwsAgentHarness } from '../support/agent-harness.js';
import { nodeRecord as node, taskRecord } from '../support/records.js';
import { auditLogEntry, pubsubPush, scheduledEventEmitted, spotWarning } from '../fixtures/webhook/events.js';
import { fixture, startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';

/**
 * Episodes of a recurring notice id (src/notice-episodes.ts) against the real Redis: duplicates of one
 * interruption collapse whichever way they arrive, a later interruption of the same (restarted) instance is a
 * job of its own that gets planned.
 */

const redisUrl = inject('redisUrl');
const SECRET = 'eb-secret-0123456789abcdef';
const auth = { 'x-spotwatch-secret': SECRET };
const HOUR = 3600_000;

/** ISO time without milliseconds, as EventBridge writes it. */
const ebTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

async function openQueue(prefix: string): Promise<BullmqNoticeQueue> {
  const queue = new BullmqNoticeQueue({ redisUrl, prefix });
  for (let i = 0; i < 100 && !(await queue.ping()); i++) await new Promise((r) => setTimeout(r, 20));
  return queue;
}

async function jobsOf(prefix: string): Promise<{ id: string; data: Notice }[]> {
  const reader = new Queue(NOTICES_QUEUE_NAME, { connection: { url: redisUrl }, prefix });
  try {
    const jobs = await reader.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized']);
    return jobs.map((j) => ({ id: j.id!, data: j.data as Notice })).sort((a, b) => a.id.localeCompare(b.id));
  } finally {
    await reader.close();
  }
}

function imdsStop(instanceId: string, actionTime: number, now: number): Notice {
  return awsParsers['aws-instance-action']!(JSON.stringify({ action: 'stop', time: ebTime(actionTime) }), { now: new Date(now), instanceId })[0]!;
}

function ebStop(instanceId: string, warningTime: number, now: number, action = 'stop'): Notice {
  return awsParsers.eventbridge!(JSON.stringify(spotWarning({ instanceId, action, id: randomUUID(), time: ebTime(warningTime) })), { now: new Date(now) })[0]!;
}

describe('AWS stop / hibernate interruptions: one job per episode', () => {
  let agent: AwsAgentHarness | undefined;
  let webhook: WebhookHarness | undefined;
  afterEach(async () => {
    await webhook?.close();
    await agent?.close();
    webhook = undefined;
    agent = undefined;
  });

  it('IMDS + EventBridge of one episode are one job; the instance restarted and interrupted again is a second job', async () => {
    agent = await awsAgentHarness(redisUrl);
    webhook = await startWebhook({ redisUrl, prefix: agent.prefix, config: { eventbridgeSecret: SECRET } });
    const running = await agent.startAgent();
    const instanceId = 'i-0123456789abcdef0';

    const first = (await agent.control('interrupt', { action: 'stop', timeLeft: 120 })) as { interruption: { time: string } };
    const [job1] = await waitFor('the first episode job', 3000, async () => {
      const found = await agent!.jobs();
      return found.length === 1 ? found : undefined;
    });
    const firstWarning = JSON.stringify(spotWarning({ instanceId, action: 'stop', time: ebTime(Date.parse(first.interruption.time) - 120_000) }));
    const viaBridge = await webhook.post('eventbridge', firstWarning, auth);
    expect(viaBridge.json.notices).toMatchObject([{ id: job1!.id, result: 'duplicate' }]);

    // EC2 stops the instance, starts it again when capacity is back, and interrupts it again. The emulator
    // cannot wait hours, so the second interruption's time is set hours ahead: what tells episodes apart is
    // how far apart their deadlines are, not when they are seen. The same agent process sees it (as after a
    // hibernate, whose RAM — and the agent's state — survives the stop).
    await agent.control('clear-interruption');
    const second = (await agent.control('interrupt', { action: 'stop', timeLeft: 3 * 3600 })) as { interruption: { time: string } };
    const jobs = await waitFor('the second episode job', 3000, async () => {
      const found = await agent!.jobs();
      return found.length === 2 ? found : undefined;
    });
    const job2 = jobs.find((j) => j.id !== job1!.id)!;
    expect(job2.id).toBe(`${job1!.id}~2`);
    expect(job2.data).toMatchObject({ id: job2.id, provider: 'aws', kind: 'interruption', action: 'stop', instanceId, deadline: new Date(second.interruption.time).toISOString() });

    // EventBridge's warning of the second episode joins it; a late retry of the first episode's stays a duplicate.
    const secondWarning = JSON.stringify(spotWarning({ instanceId, action: 'stop', time: ebTime(Date.parse(second.interruption.time) - 120_000) }));
    expect((await webhook.post('eventbridge', secondWarning, auth)).json.notices).toMatchObject([{ id: job2.id, result: 'duplicate' }]);
    expect((await webhook.post('eventbridge', firstWarning, auth)).json.notices).toMatchObject([{ id: job1!.id, result: 'duplicate' }]);
    expect(await agent.jobs()).toHaveLength(2);

    const agentMetrics = await (await fetch(`http://127.0.0.1:${running.httpPort}/metrics`)).text();
    expect(agentMetrics).toMatch(/spotwatch_notice_episodes_total\{provider="aws"\} 1/);
    expect(agentMetrics).toMatch(/spotwatch_enqueue_total\{result="created"\} 2/);
  });

  it('agent restarts, repeated polls and webhook retries hours later stay one job per episode', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queue = await openQueue(prefix);
    try {
      const id = 'i-0aaaaaaaaaaaaaaa7';
      const t1 = Date.parse('2025-03-01T10:00:00Z');
      const imds = imdsStop(id, t1, t1 - 110_000);
      expect(await queue.store(imds)).toEqual({ outcome: 'created', id: imds.id, episode: 1, newEpisode: false });
      // Polled again, the agent restarted (later detectedAt), EventBridge (its own event id, the warning time), and
      // the bridge retrying 20 h later: all the same episode.
      expect((await queue.store(imdsStop(id, t1, t1 - 100_000))).outcome).toBe('duplicate');
      expect((await queue.store(imdsStop(id, t1, t1 - 30_000))).outcome).toBe('duplicate');
      expect(await queue.store(ebStop(id, t1 - 121_000, t1 - 100_000))).toMatchObject({ outcome: 'duplicate', id: imds.id, episode: 1 });
      expect(await queue.store(ebStop(id, t1 - 121_000, t1 + 20 * HOUR))).toMatchObject({ outcome: 'duplicate', id: imds.id });

      // Hibernate: EC2 starts at once, so IMDS `time` may be the warning time itself, 120 s before the bridge's deadline.
      const h1 = Date.parse('2025-03-02T10:00:00Z');
      const hib = awsParsers['aws-instance-action']!(JSON.stringify({ action: 'hibernate', time: ebTime(h1) }), { now: new Date(h1), instanceId: id })[0]!;
      expect((await queue.store(hib)).outcome).toBe('created');
      expect(await queue.store(ebStop(id, h1, h1 + 1000, 'hibernate'))).toMatchObject({ outcome: 'duplicate', id: hib.id });

      // Second stop episode, 6 h later: a new job, and both of its sources land in it.
      const t2 = t1 + 6 * HOUR;
      const second = await queue.store(ebStop(id, t2 - 120_000, t2 - 119_000));
      expect(second).toEqual({ outcome: 'created', id: `${imds.id}~2`, episode: 2, newEpisode: true });
      expect(await queue.store(imdsStop(id, t2, t2 - 118_000))).toEqual({ outcome: 'duplicate', id: `${imds.id}~2`, episode: 2, newEpisode: false });
      // A notice of a time between the recorded episodes (an interruption that is over and was never seen): not stored.
      expect((await queue.store(imdsStop(id, t1 + 3 * HOUR, t2))).outcome).toBe('stale');

      const jobs = (await jobsOf(prefix)).filter((j) => j.data.action === 'stop');
      expect(jobs.map((j) => [j.id, j.data.id, j.data.deadline])).toEqual([
        [imds.id, imds.id, new Date(t1).toISOString()],
        [`${imds.id}~2`, `${imds.id}~2`, new Date(t2).toISOString()],
      ]);
    } finally {
      await queue.close();
    }
  });

  it('two stores racing on the first notice of a new episode open it once', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queues = await Promise.all([openQueue(prefix), openQueue(prefix), openQueue(prefix)]);
    try {
      const id = 'i-0aaaaaaaaaaaaaaa8';
      const t1 = Date.parse('2025-03-01T10:00:00Z');
      const t2 = t1 + 5 * HOUR;
      await queues[0]!.store(imdsStop(id, t1, t1 - 60_000));
      const results = await Promise.all([
        queues[0]!.store(imdsStop(id, t2, t2 - 100_000)),
        queues[1]!.store(ebStop(id, t2 - 120_000, t2 - 100_000)),
        queues[2]!.store(imdsStop(id, t2, t2 - 90_000)),
      ]);
      // (The created / duplicate label of racing adds is best effort — BullMQ's add does not say which won —
      // but the episode is opened by exactly one of them, and there is one job.)
      expect(results.filter((r) => r.newEpisode)).toHaveLength(1);
      expect(new Set(results.map((r) => r.id)).size).toBe(1);
      expect(await jobsOf(prefix)).toHaveLength(2);
    } finally {
      await Promise.all(queues.map((q) => q.close()));
    }
  });

  it('rebuilds a lost episode record from the jobs present (jobs stored before episodes, or a record that expired)', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queue = await openQueue(prefix);
    const redis = new Redis(redisUrl);
    const raw = new Queue(NOTICES_QUEUE_NAME, { connection: { url: redisUrl }, prefix });
    try {
      const id = 'i-0aaaaaaaaaaaaaaa9';
      const t1 = Date.parse('2025-03-01T10:00:07.250Z');
      const old = imdsStop(id, t1, t1 - 60_000);
      // A job stored the old way (job id = notice id, no episode record).
      await raw.add(old.kind, old, { jobId: old.id });
      expect((await queue.store(ebStop(id, t1 - 120_000, t1))).outcome).toBe('duplicate');
      await redis.del(`${prefix}:sw:episodes:${old.id}`);
      const t2 = t1 + 4 * HOUR;
      expect(await queue.store(imdsStop(id, t2, t2 - 60_000))).toMatchObject({ outcome: 'created', id: `${old.id}~2`, newEpisode: true });
      // The record expires; both jobs are still there: the anchors come back from the jobs' deadlines.
      await redis.del(`${prefix}:sw:episodes:${old.id}`);
      expect(await queue.store(ebStop(id, t2 - 120_000, t2))).toMatchObject({ outcome: 'duplicate', id: `${old.id}~2`, episode: 2 });
      expect(await queue.store(imdsStop(id, t1, t2))).toMatchObject({ outcome: 'duplicate', id: old.id, episode: 1 });
      expect(await redis.ttl(`${prefix}:sw:episodes:${old.id}`)).toBeGreaterThan(7 * 24 * 3600);
      expect(await jobsOf(prefix)).toHaveLength(2);
    } finally {
      await raw.obliterate({ force: true }).catch(() => {});
      await raw.close();
      redis.disconnect();
      await queue.close();
    }
  });

  it('terminations keep plain ids: no episode record', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queue = await openQueue(prefix);
    const redis = new Redis(redisUrl);
    try {
      const t1 = Date.now() + 120_000;
      const notice = awsParsers['aws-instance-action']!(JSON.stringify({ action: 'terminate', time: ebTime(t1) }), { now: new Date(), instanceId: 'i-0aaaaaaaaaaaaaab0' })[0]!;
      expect(await queue.store(notice)).toEqual({ outcome: 'created', id: notice.id, episode: 1, newEpisode: false });
      expect(await redis.keys(`${prefix}:sw:episodes:*`)).toEqual([]);
    } finally {
      redis.disconnect();
      await queue.close();
    }
  });
});

describe('the second episode is planned (real planner and registry)', () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const close of closers.reverse()) await close().catch(() => {});
  });

  const nodeRecord = (id: string, instanceId: string, extra: Partial<NodeRecord> = {}): NodeRecord => node(id, { instanceId, capacityPool: 'g6.xlarge/us-east-1a', ...extra });

  it('each episode job is processed by a notices worker into its own migration', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const registry = new Registry(redisUrl, prefix);
    closers.push(() => registry.close());
    const planner = new Planner({ registry, logger: silentLogger, dispatch: async () => {} });
    const plans = new Map<string, NoticePlan>();
    const worker = new Worker(
      NOTICES_QUEUE_NAME,
      async (job: Job) => {
        const plan = await planner.planNotice(noticeSchema.parse(job.data));
        plans.set(job.id!, plan);
        return plan;
      },
      { connection: { url: redisUrl, maxRetriesPerRequest: null }, prefix },
    );
    closers.push(() => worker.close());
    const queue = await openQueue(prefix);
    closers.push(() => queue.close());

    const instanceId = 'i-0aaaaaaaaaaaaaab1';
    await registry.heartbeat(nodeRecord('spot-a', instanceId), 60_000);
    await registry.heartbeat(nodeRecord('on-demand-b', 'i-0aaaaaaaaaaaaaab2', { lifecycle: 'on-demand' }), 60_000);
    await registry.putTask(taskRecord('t1', 'spot-a'));

    const now = Date.now();
    const first = await queue.store(imdsStop(instanceId, now + 120_000, now));
    const plan1 = await waitFor('the first episode planned', 5000, () => plans.get(first.id));
    expect(plan1.tasks).toMatchObject([{ taskId: 't1', decision: 'migrate', migrationId: migrationIdFor(first.id, 't1') }]);

    // The instance was stopped, started again hours later, the task runs on it again, and it is interrupted again.
    await registry.updateTask('t1', { state: 'running', nodeId: 'spot-a' });
    await registry.setDraining('spot-a', false, '');
    const later = now + 5 * HOUR;
    const second = await queue.store(ebStop(instanceId, later - 120_000, later - 119_000));
    expect(second).toMatchObject({ outcome: 'created', id: `${first.id}~2`, newEpisode: true });
    const plan2 = await waitFor('the second episode planned', 5000, () => plans.get(second.id));
    expect(plan2).toMatchObject({ noticeId: second.id, decision: 'migrate' });
    expect(plan2.tasks).toMatchObject([{ taskId: 't1', decision: 'migrate', migrationId: migrationIdFor(second.id, 't1') }]);
    expect(migrationIdFor(second.id, 't1')).not.toBe(migrationIdFor(first.id, 't1'));
  });

  it('Azure: the eviction annotation after the Preempt event is a second job that plans nothing new', async () => {
    // No key is shared by the two (src/notice-episodes.ts, providers/azure/parsers.ts): two jobs, and the
    // later one finds the node's tasks already migrating.
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const registry = new Registry(redisUrl, prefix);
    closers.push(() => registry.close());
    const planner = new Planner({ registry, logger: silentLogger, dispatch: async () => {} });
    const queue = await openQueue(prefix);
    closers.push(() => queue.close());
    await registry.heartbeat(nodeRecord('vm3', 'vmss_3', { provider: 'azure' }), 60_000);
    await registry.heartbeat(nodeRecord('vm9', 'vmss_9', { provider: 'azure', lifecycle: 'on-demand' }), 60_000);
    await registry.putTask(taskRecord('t3', 'vm3'));

    const preempt = azureParsers.eventgrid!(JSON.stringify(scheduledEventEmitted({ resources: ['vmss_3'] })), { now: new Date() })[0]!;
    const annotation = azureParsers.eventgrid!(fixture('azure/eventgrid-annotation-preempted.json'), { now: new Date() })[0]!;
    expect(annotation.instanceId).toBe('vmss_3');
    expect((await queue.store(preempt)).outcome).toBe('created');
    expect((await queue.store(annotation)).outcome).toBe('created');
    const jobs = await jobsOf(prefix);
    expect(jobs).toHaveLength(2);

    const first = await planner.planNotice(noticeSchema.parse(jobs.find((j) => j.id === preempt.id)!.data));
    expect(first.tasks).toMatchObject([{ taskId: 't3', decision: 'migrate' }]);
    const second = await planner.planNotice(noticeSchema.parse(jobs.find((j) => j.id === annotation.id)!.data));
    expect(second.tasks).toEqual([]);
    expect((await registry.getTask('t3'))?.lastMigrationId).toBe(first.tasks[0]!.migrationId);
  });
});

describe('GCP preemptions: one job per episode', () => {
  const INSTANCE = '4520031799277581759';

  function preempted(now: number): Notice {
    return gcpParsers['gcp-preempted']!('TRUE', { now: new Date(now), instanceId: INSTANCE })[0]!;
  }

  function pushed(timestamp: number, now: number): Notice {
    const entry = auditLogEntry({ instanceId: INSTANCE, timestamp: new Date(timestamp).toISOString(), operationId: `systemevent-${timestamp}` });
    return gcpParsers.pubsub!(JSON.stringify(pubsubPush(entry, String(timestamp))), { now: new Date(now) })[0]!;
  }

  it('metadata server + audit log of one preemption are one job; the VM started and preempted again is a second', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queue = await openQueue(prefix);
    try {
      const p1 = Date.parse('2025-03-01T10:00:00Z');
      const seen = preempted(p1 + 400);
      expect((await queue.store(seen)).outcome).toBe('created');
      // The audit log entry (its own timestamp), a Pub/Sub redelivery a day later, and an agent restarted inside
      // the 30 s window re-detecting preempted=TRUE: the same preemption.
      expect(await queue.store(pushed(p1, p1 + 2000))).toMatchObject({ outcome: 'duplicate', id: seen.id });
      expect(await queue.store(pushed(p1, p1 + 24 * HOUR))).toMatchObject({ outcome: 'duplicate', id: seen.id });
      expect(await queue.store(preempted(p1 + 20_000))).toMatchObject({ outcome: 'duplicate', id: seen.id });

      // Stopped (GCE's TERMINATED), started again and preempted again three hours later.
      const p2 = p1 + 3 * HOUR;
      const again = await queue.store(pushed(p2, p2 + 1500));
      expect(again).toEqual({ outcome: 'created', id: `${seen.id}~2`, episode: 2, newEpisode: true });
      expect(await queue.store(preempted(p2 + 300))).toMatchObject({ outcome: 'duplicate', id: `${seen.id}~2` });
      const jobs = await jobsOf(prefix);
      expect(jobs.map((j) => j.data.id)).toEqual([seen.id, `${seen.id}~2`]);
      expect(jobs[1]!.data).toMatchObject({ provider: 'gcp', kind: 'interruption', instanceId: INSTANCE, deadline: new Date(p2 + 30_000).toISOString() });
    } finally {
      await queue.close();
    }
  });
});

describe('Azure: ids are per event already', () => {
  const VM = 'vmss_3';

  function imdsDocument(eventId: string, notBefore: string, status = 'Scheduled'): string {
    return JSON.stringify({
      DocumentIncarnation: 3,
      Events: [{ EventId: eventId, EventStatus: status, EventType: 'Preempt', ResourceType: 'VirtualMachine', Resources: [VM], NotBefore: notBefore, Description: '', EventSource: 'Platform', DurationInSeconds: -1 }],
    });
  }

  it('one eviction via IMDS and Event Grid is one job; the next eviction of the restarted VM has a new EventId and a new job', async () => {
    const prefix = `ep${randomBytes(4).toString('hex')}`;
    const queue = await openQueue(prefix);
    const redis = new Redis(redisUrl);
    try {
      const eventId = 'C7061BAC-AFDC-4513-B24B-AA5F13A16123';
      const viaImds = azureParsers['azure-scheduled-events']!(imdsDocument(eventId, 'Mon, 19 Sep 2016 18:29:47 GMT'), { now: new Date(), instanceId: VM })[0]!;
      const viaGrid = azureParsers.eventgrid!(JSON.stringify(scheduledEventEmitted({ eventId, resources: [VM] })), { now: new Date() })[0]!;
      expect(viaGrid.id).toBe(viaImds.id);
      expect((await queue.store(viaImds)).outcome).toBe('created');
      expect((await queue.store(viaGrid)).outcome).toBe('duplicate');
      // Started (NotBefore empty) keeps the EventId: still the same notice id.
      const started = azureParsers['azure-scheduled-events']!(imdsDocument(eventId, '', 'Started'), { now: new Date(), instanceId: VM })[0]!;
      expect(await queue.store(started)).toMatchObject({ outcome: 'duplicate', id: viaImds.id });

      const next = azureParsers['azure-scheduled-events']!(imdsDocument('9A1B2C3D-0000-4000-8000-000000000001', 'Mon, 19 Sep 2016 21:29:47 GMT'), { now: new Date(), instanceId: VM })[0]!;
      expect(await queue.store(next)).toEqual({ outcome: 'created', id: next.id, episode: 1, newEpisode: false });
      expect(next.id).not.toBe(viaImds.id);
      expect(await redis.keys(`${prefix}:sw:episodes:*`)).toEqual([]);
    } finally {
      redis.disconnect();
      await queue.close();
    }
  });
});
