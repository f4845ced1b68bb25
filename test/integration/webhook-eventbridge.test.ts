import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { request as httpsRequest } from 'node:https';
import { awsParsers } from '../../providers/aws/parsers.js';
import type { InstanceLocator } from '../../src/lookup/instance-locator.js';
import { LocalRedis } from '../../src/util/local-redis.js';
import { awsAgentHarness, waitFor, type AwsAgentHarness } from '../support/agent-harness.js';
import { spotWarning, unrelatedEvent } from '../fixtures/webhook/events.js';
import { startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';
import { makeTestPki } from '../fixtures/webhook/pki.js';

const redisUrl = inject('redisUrl');
const SECRET = 'eb-secret-0123456789abcdef';
const auth = { 'x-spotwatch-secret': SECRET };

describe('webhook: EventBridge API destination', () => {
  let webhook: WebhookHarness;
  beforeAll(async () => {
    webhook = await startWebhook({ redisUrl, config: { eventbridgeSecret: SECRET, maxBodyBytes: '4096' } });
  });
  afterAll(async () => {
    await webhook.close();
  });

  it('stores a spot interruption warning as one job whose notice equals `spotwatch parse --source eventbridge`', async () => {
    const event = spotWarning({ instanceId: 'i-0aaaaaaaaaaaaaaa1', action: 'stop' });
    const response = await webhook.post('eventbridge', JSON.stringify(event), auth);
    expect(response.status).toBe(200);
    const parsed = awsParsers.eventbridge!(JSON.stringify(event), { now: new Date() })[0]!;
    expect(response.json).toMatchObject({ status: 'stored', notices: [{ id: parsed.id, result: 'created' }] });
    const jobs = (await webhook.jobs()).filter((j) => j.id === parsed.id);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.data).toMatchObject({ provider: 'aws', kind: 'interruption', action: 'stop', instanceId: 'i-0aaaaaaaaaaaaaaa1', source: 'eventbridge', eventId: event.id });
  });

  it('acknowledges a replayed delivery and keeps one job', async () => {
    const body = JSON.stringify(spotWarning({ instanceId: 'i-0aaaaaaaaaaaaaaa2' }));
    const first = await webhook.post('eventbridge', body, auth);
    const again = await webhook.post('eventbridge', body, auth);
    expect(first.json.notices).toMatchObject([{ result: 'created' }]);
    expect(again.status).toBe(200);
    expect(again.json.notices).toMatchObject([{ result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === 'i-0aaaaaaaaaaaaaaa2')).toHaveLength(1);
  });

  it('refuses a missing or wrong shared secret with 401, a repeated header with 400, and stores nothing', async () => {
    const before = (await webhook.jobs()).length;
    const body = JSON.stringify(spotWarning({ instanceId: 'i-0bbbbbbbbbbbbbbb1' }));
    expect((await webhook.post('eventbridge', body)).status).toBe(401);
    expect((await webhook.post('eventbridge', body, { 'x-spotwatch-secret': `${SECRET}x` })).status).toBe(401);
    expect((await webhook.post('eventbridge', body, { 'x-spotwatch-secret': SECRET.slice(0, -1) })).status).toBe(401);
    const wrong = await webhook.post('eventbridge', body, { 'x-spotwatch-secret': 'nope' });
    expect(wrong.json.error).toBe('wrong x-spotwatch-secret');
    expect(JSON.stringify(webhook.logs)).not.toContain(SECRET);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('refuses oversized (413), malformed (400), non-UTF-8 (400), non-JSON media (415) and invalid events (400)', async () => {
    const before = (await webhook.jobs()).length;
    const big = JSON.stringify({ ...spotWarning({ instanceId: 'i-0ccccccccccccccc1' }), padding: 'x'.repeat(5000) });
    expect((await webhook.post('eventbridge', big, auth)).status).toBe(413);
    expect((await webhook.post('eventbridge', '{"id": "x", ', auth)).status).toBe(400);
    expect((await webhook.post('eventbridge', '', auth)).status).toBe(400);
    expect((await webhook.post('eventbridge', '[1,2]', auth)).status).toBe(400);
    expect((await webhook.post('eventbridge', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), auth)).status).toBe(400);
    expect((await webhook.post('eventbridge', JSON.stringify(spotWarning()), { ...auth, 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415);
    const invalid = spotWarning({ instanceId: 'not-an-instance' });
    const answer = await webhook.post('eventbridge', JSON.stringify(invalid), auth);
    expect(answer.status).toBe(400);
    expect(answer.json.error).toMatch(/detail\.instance-id/);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('acknowledges an unknown event type with 200, stores nothing and logs it', async () => {
    const before = (await webhook.jobs()).length;
    const response = await webhook.post('eventbridge', JSON.stringify(unrelatedEvent()), auth);
    expect(response.status).toBe(200);
    expect(response.json.status).toBe('ignored');
    expect(await webhook.jobs()).toHaveLength(before);
    expect(webhook.logs.some((l) => String(l.msg).includes('acknowledged and ignored') && String(l.msg).includes('Object Created'))).toBe(true);
  });

  it('answers the other routes and methods: unconfigured source 404, GET 405, unknown path 404; /healthz, /readyz and /metrics', async () => {
    expect((await webhook.post('pubsub', '{}')).status).toBe(404);
    expect((await fetch(`${webhook.url}/v1/events/eventbridge`)).status).toBe(405);
    expect((await fetch(`${webhook.url}/v1/events/kafka`, { method: 'POST', body: '{}' })).status).toBe(404);
    expect((await fetch(`${webhook.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${webhook.url}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await webhook.metrics();
    expect(metrics).toMatch(/spotwatch_webhook_requests_total\{source="eventbridge",status="200"\} [1-9]/);
    expect(metrics).toMatch(/spotwatch_webhook_rejected_total\{source="eventbridge",reason="unauthenticated"\} [1-9]/);
    expect(metrics).toMatch(/spotwatch_enqueue_total\{result="duplicate"\} [1-9]/);
    expect(metrics).toMatch(/spotwatch_notices_total\{provider="aws",kind="interruption",source="eventbridge"\} [1-9]/);
  });
});

describe('webhook: rate limit, Redis down, and the agent seeing the same notice', () => {
  let webhook: WebhookHarness | undefined;
  let agent: AwsAgentHarness | undefined;
  let privateRedis: LocalRedis | undefined;
  afterEach(async () => {
    await webhook?.close();
    await agent?.close();
    await privateRedis?.destroy();
    webhook = agent = privateRedis = undefined;
  });

  it('answers 429 with Retry-After beyond the per-source rate', async () => {
    webhook = await startWebhook({ redisUrl, config: { eventbridgeSecret: SECRET, rateLimit: '2', rateBurst: '3' } });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await webhook.post('eventbridge', JSON.stringify(unrelatedEvent()), auth)).status);
    expect(statuses.slice(0, 3)).toEqual([200, 200, 200]);
    expect(statuses.slice(3)).toEqual([429, 429]);
    const limited = await webhook.post('eventbridge', JSON.stringify(unrelatedEvent()), auth);
    expect(limited.headers.get('retry-after')).toBe('1');
  });

  it('answers 503 while Redis is down (nothing acknowledged, nothing stored later) and 200 once it is back', async () => {
    privateRedis = await LocalRedis.start();
    webhook = await startWebhook({ redisUrl: privateRedis.url, config: { eventbridgeSecret: SECRET, enqueueTimeoutMs: '300' } });
    await privateRedis.stop();
    const body = JSON.stringify(spotWarning({ instanceId: 'i-0ddddddddddddddd1' }));
    const down = await webhook.post('eventbridge', body, auth);
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('5');
    expect((await fetch(`${webhook.url}/readyz`)).status).toBe(503);
    await privateRedis.restart();
    const jobsAfterRestart = await waitFor('Redis back', 10_000, async () => webhook!.jobs().catch(() => undefined));
    expect(jobsAfterRestart).toHaveLength(0);
    // The bridge retries: now it is stored, once.
    const retried = await waitFor('a stored retry', 10_000, async () => {
      const r = await webhook!.post('eventbridge', body, auth);
      return r.status === 200 ? r : undefined;
    });
    expect(retried.json.notices).toMatchObject([{ result: 'created' }]);
    expect(await webhook.jobs()).toHaveLength(1);
  });

  it('the webhook (EventBridge) and the agent (IMDS) seeing the same interruption make one job', async () => {
    agent = await awsAgentHarness(redisUrl);
    webhook = await startWebhook({ redisUrl, prefix: agent.prefix, config: { eventbridgeSecret: SECRET } });
    await agent.startAgent();
    const fired = (await agent.control('interrupt', { action: 'stop' })) as { interruption: { time: string } };
    const jobs = await waitFor('the agent job', 3000, async () => {
      const found = await agent!.jobs();
      return found.length > 0 ? found : undefined;
    });
    // EventBridge's warning comes two minutes before the interruption time.
    const warningTime = new Date(Date.parse(fired.interruption.time) - 120_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const response = await webhook.post('eventbridge', JSON.stringify(spotWarning({ instanceId: 'i-0123456789abcdef0', action: 'stop', time: warningTime })), auth);
    expect(response.status).toBe(200);
    expect(response.json.notices).toMatchObject([{ id: jobs[0]!.id, result: 'duplicate' }]);
    expect(await agent.jobs()).toHaveLength(1);
  });
});

describe('webhook: HTTPS and instance lookup', () => {
  it('serves HTTPS with --tls-cert/--tls-key and, with a locator, logs the node of each new notice', async () => {
    const pki = makeTestPki(['localhost']);
    const asked: string[] = [];
    const locator: InstanceLocator = {
      locate: (provider, instanceId) => {
        asked.push(`${provider}/${instanceId}`);
        return Promise.resolve({ provider, instanceId, source: 'registry', nodeId: 'node-7', lifecycle: 'spot' });
      },
    };
    const webhook = await startWebhook({ redisUrl, config: { eventbridgeSecret: SECRET, tlsCert: pki.serverCertFile, tlsKey: pki.serverKeyFile }, locator });
    try {
      expect(webhook.url).toMatch(/^https:/);
      const body = JSON.stringify(spotWarning({ instanceId: 'i-0a1a1a1a1a1a1a1a1' }));
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(`${webhook.url}/v1/events/eventbridge`, { method: 'POST', ca: pki.caPem, headers: { ...auth, 'content-type': 'application/json' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(body);
      });
      expect(status).toBe(200);
      await waitFor('the lookup log line', 2000, () => (webhook.logs.some((l) => l.msg === 'notice instance located' && (l.node as { nodeId?: string } | null)?.nodeId === 'node-7') ? true : undefined));
      expect(asked).toEqual(['aws/i-0a1a1a1a1a1a1a1a1']);
    } finally {
      await webhook.close();
      pki.cleanup();
    }
  });
});
