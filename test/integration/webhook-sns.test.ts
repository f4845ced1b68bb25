import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { awsParsers } from '../../providers/aws/parsers.js';
import { spotWarning, unrelatedEvent } from '../fixtures/webhook/events.js';
import { startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';
import { makeTestPki, type TestPki } from '../fixtures/webhook/pki.js';
import { CERT_PATH, notification, signSns, SNS_HOST, startFakeSnsHost, subscriptionConfirmation, TOPIC_ARN, type FakeSnsHost, type SnsFields } from '../fixtures/webhook/sns.js';

const redisUrl = inject('redisUrl');
const OTHER_TOPIC = 'arn:aws:sns:us-east-1:123456789012:someone-elses-topic';

describe('webhook: SNS HTTPS subscription (signatures against a test CA)', () => {
  let pki: TestPki;
  let snsHost: FakeSnsHost;
  let webhook: WebhookHarness;
  const send = (fields: SnsFields, type = fields.Type) => webhook.post('sns', JSON.stringify(fields), { 'content-type': 'text/plain; charset=UTF-8', 'x-amz-sns-message-type': type ?? 'Notification' });

  beforeAll(async () => {
    pki = makeTestPki([SNS_HOST, 'localhost']);
    snsHost = await startFakeSnsHost(pki, pki.signingCertPem);
    webhook = await startWebhook({
      redisUrl,
      config: { snsTopicArns: TOPIC_ARN, maxBodyBytes: '8192' },
      // The real verifier and real HTTPS: only the address (127.0.0.1) and the trusted CA are the test's.
      snsHttps: { ca: pki.caPem, connectTo: { host: '127.0.0.1', port: snsHost.port } },
    });
  });
  afterAll(async () => {
    await webhook.close();
    await snsHost.close();
    pki.cleanup();
  });

  it('confirms a subscription of an allowed topic (GET SubscribeURL on the SNS host)', async () => {
    const response = await send(signSns(subscriptionConfirmation(), pki.signingKeyPem));
    expect(response.status).toBe(200);
    expect(snsHost.requests.some((r) => r.startsWith('/?Action=ConfirmSubscription'))).toBe(true);
    expect(await webhook.metrics()).toMatch(/spotwatch_webhook_handshakes_total\{source="sns",kind="sns_subscription_confirmed"\} 1/);
  });

  it('refuses to confirm a topic that is not allowed (403) and never calls its SubscribeURL', async () => {
    const confirmations = snsHost.requests.filter((r) => r.includes('ConfirmSubscription')).length;
    const response = await send(signSns(subscriptionConfirmation({ topicArn: OTHER_TOPIC }), pki.signingKeyPem));
    expect(response.status).toBe(403);
    expect(snsHost.requests.filter((r) => r.includes('ConfirmSubscription'))).toHaveLength(confirmations);
  });

  it('stores a notification signed with SignatureVersion 1 (SHA1) and 2 (SHA256): one job each, the EventBridge notice id, source sns', async () => {
    for (const [version, instanceId] of [['1', 'i-0eeeeeeeeeeeeeee1'], ['2', 'i-0eeeeeeeeeeeeeee2']] as const) {
      const event = JSON.stringify(spotWarning({ instanceId }));
      const response = await send(signSns(notification(event), pki.signingKeyPem, version));
      expect(response.status).toBe(200);
      const expected = awsParsers.eventbridge!(event, { now: new Date() })[0]!;
      expect(response.json.notices).toMatchObject([{ id: expected.id, result: 'created' }]);
      const job = (await webhook.jobs()).find((j) => j.id === expected.id);
      expect(job?.data).toMatchObject({ instanceId, source: 'sns', kind: 'interruption' });
    }
    // Both messages used one certificate URL: fetched once, then cached.
    expect(snsHost.requests.filter((r) => r === CERT_PATH)).toHaveLength(1);
  });

  it('acknowledges a replayed notification and keeps one job; the same event sent directly is the same job', async () => {
    const event = JSON.stringify(spotWarning({ instanceId: 'i-0eeeeeeeeeeeeeee3' }));
    const signed = signSns(notification(event), pki.signingKeyPem, '2');
    expect((await send(signed)).json.notices).toMatchObject([{ result: 'created' }]);
    const replay = await send(signed);
    expect(replay.status).toBe(200);
    expect(replay.json.notices).toMatchObject([{ result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === 'i-0eeeeeeeeeeeeeee3')).toHaveLength(1);
  });

  it('refuses forged and misdirected messages with 401 and stores nothing', async () => {
    const before = (await webhook.jobs()).length;
    const event = JSON.stringify(spotWarning({ instanceId: 'i-0fffffffffffffff1' }));
    // Message changed after signing.
    const tampered = { ...signSns(notification(event), pki.signingKeyPem), Message: JSON.stringify(spotWarning({ instanceId: 'i-0fffffffffffffff2' })) };
    expect((await send(tampered)).status).toBe(401);
    // Signed by another key (a valid certificate of the same CA, but not the one at SigningCertURL).
    expect((await send(signSns(notification(event), pki.otherSigningKeyPem))).status).toBe(401);
    // Certificate URLs off the SNS host pattern, or not https: refused before any fetch.
    const fetchesBefore = snsHost.requests.length;
    for (const certUrl of ['https://evil.example.com/cert.pem', `http://${SNS_HOST}${CERT_PATH}`, `https://${SNS_HOST}.evil.example.com${CERT_PATH}`, `https://${SNS_HOST}:8443${CERT_PATH}`, 'https://sns.amazonaws.com.evil/x.pem']) {
      const answer = await send(signSns(notification(event, { certUrl }), pki.signingKeyPem));
      expect(answer.status, certUrl).toBe(401);
    }
    expect(snsHost.requests.length).toBe(fetchesBefore);
    // Unknown signature version.
    expect((await send({ ...signSns(notification(event), pki.signingKeyPem), SignatureVersion: '3' })).status).toBe(401);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('refuses a topic that is not allowed (403), a stale message (400), a type mismatch and malformed bodies (400), oversized (413)', async () => {
    const before = (await webhook.jobs()).length;
    const event = JSON.stringify(spotWarning({ instanceId: 'i-0fffffffffffffff3' }));
    expect((await send(signSns(notification(event, { topicArn: OTHER_TOPIC }), pki.signingKeyPem))).status).toBe(403);
    const old = new Date(Date.now() - 2 * 3600_000).toISOString();
    const stale = await send(signSns(notification(event, { timestamp: old }), pki.signingKeyPem));
    expect(stale.status).toBe(400);
    expect(stale.json.error).toMatch(/replay window/);
    expect((await send(signSns(notification(event), pki.signingKeyPem), 'SubscriptionConfirmation')).status).toBe(400);
    expect((await webhook.post('sns', '{"Type": "Notification"', { 'x-amz-sns-message-type': 'Notification' })).status).toBe(400);
    expect((await webhook.post('sns', '{"Type": "Notification"}', { 'x-amz-sns-message-type': 'Notification' })).status).toBe(400);
    expect((await send(signSns(notification(event + ' '.repeat(9000)), pki.signingKeyPem))).status).toBe(413);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('acknowledges (200) a verified message that announces nothing and logs it', async () => {
    const before = (await webhook.jobs()).length;
    const response = await send(signSns(notification(JSON.stringify(unrelatedEvent()), { subject: 'S3' }), pki.signingKeyPem));
    expect(response.status).toBe(200);
    expect(response.json.status).toBe('ignored');
    const plain = await send(signSns(notification('hello, not JSON'), pki.signingKeyPem));
    expect(plain.status).toBe(200);
    expect(await webhook.jobs()).toHaveLength(before);
    expect(webhook.logs.filter((l) => String(l.msg).includes('acknowledged and ignored'))).toHaveLength(2);
  });
});
