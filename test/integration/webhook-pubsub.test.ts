import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gcpParsers } from '../../providers/gcp/parsers.js';
import { auditLogEntry, pubsubPush } from '../fixtures/webhook/events.js';
import { agentEnqueue, startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';
import { makeSigner, signJwt, startJwksServer, unsignedJwt, type JwksServer, type TestSigner } from '../fixtures/webhook/jwt.js';

const redisUrl = inject('redisUrl');
const AUDIENCE = 'https://spotwatch.example.com/v1/events/pubsub';
const PUSH_SA = 'spotwatch-push@spotwatch-demo.iam.gserviceaccount.com';

describe('webhook: Pub/Sub push and Eventarc (OIDC tokens against a test JWKS)', () => {
  let signer: TestSigner;
  let jwks: JwksServer;
  let webhook: WebhookHarness;
  const claims = (over: Record<string, unknown> = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return { iss: 'https://accounts.google.com', aud: AUDIENCE, azp: '1234567890', email: PUSH_SA, email_verified: true, sub: '1234567890', iat: now - 10, exp: now + 3600, ...over };
  };
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const push = (body: unknown, token: string, headers: Record<string, string> = {}) => webhook.post('pubsub', JSON.stringify(body), { ...bearer(token), ...headers });

  beforeAll(async () => {
    signer = makeSigner();
    jwks = await startJwksServer([makeSigner('unrelated').publicJwk, signer.publicJwk]);
    webhook = await startWebhook({ redisUrl, config: { pubsubAudience: AUDIENCE, pubsubServiceAccount: PUSH_SA, pubsubJwksUrl: jwks.url, maxBodyBytes: '8192' } });
  });
  afterAll(async () => {
    await webhook.close();
    await jwks.close();
  });

  it('stores a preemption from a push delivery as one job (the `pubsub` parser\'s notice), keys fetched once and cached', async () => {
    const body = pubsubPush(auditLogEntry({ instanceId: '1000000000000000001' }));
    const response = await push(body, signJwt(signer, claims()));
    expect(response.status).toBe(200);
    const expected = gcpParsers.pubsub!(JSON.stringify(body), { now: new Date() })[0]!;
    expect(response.json.notices).toMatchObject([{ id: expected.id, result: 'created' }]);
    const job = (await webhook.jobs()).find((j) => j.id === expected.id);
    expect(job?.data).toMatchObject({ provider: 'gcp', kind: 'interruption', instanceId: '1000000000000000001', source: 'pubsub' });
    // The issuer without https:// is Google's other spelling.
    const again = await push(pubsubPush(auditLogEntry({ instanceId: '1000000000000000002' })), signJwt(signer, claims({ iss: 'accounts.google.com' })));
    expect(again.status).toBe(200);
    expect(jwks.fetches()).toBe(1);
  });

  it('acknowledges a redelivery (same message) and keeps one job', async () => {
    const body = pubsubPush(auditLogEntry({ instanceId: '1000000000000000003' }), '77');
    expect((await push(body, signJwt(signer, claims()))).json.notices).toMatchObject([{ result: 'created' }]);
    const redelivered = await push(body, signJwt(signer, claims()));
    expect(redelivered.status).toBe(200);
    expect(redelivered.json.notices).toMatchObject([{ result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === '1000000000000000003')).toHaveLength(1);
  });

  it('refuses bad tokens with 401 (forged, expired, wrong audience / issuer, alg none, none at all) and the wrong identity with 403', async () => {
    const before = (await webhook.jobs()).length;
    const body = pubsubPush(auditLogEntry({ instanceId: '1000000000000000004' }));
    const impostor = makeSigner(signer.kid); // same kid, other key: a forged signature
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ['no token', {}, 401, /missing Authorization/],
      ['forged signature', bearer(signJwt(impostor, claims())), 401, /signature/],
      ['expired', bearer(signJwt(signer, claims({ exp: Math.floor(Date.now() / 1000) - 600 }))), 401, /expired/],
      ['wrong audience', bearer(signJwt(signer, claims({ aud: 'https://other.example.com/push' }))), 401, /audience/],
      ['wrong issuer', bearer(signJwt(signer, claims({ iss: 'https://evil.example.com' }))), 401, /issuer/],
      ['alg none', bearer(unsignedJwt(claims(), signer.kid)), 401, /algorithm/],
      ['HMAC', bearer(signJwt(signer, claims(), { alg: 'HS256' })), 401, /algorithm/],
      ['unknown kid', bearer(signJwt(makeSigner('kid-nobody-has'), claims())), 401, /kid/],
      ['garbage', bearer('abc.def.ghi'), 401, /JWT/],
      ['other service account', bearer(signJwt(signer, claims({ email: 'someone@evil.iam.gserviceaccount.com' }))), 403, /service account/],
      ['email not verified', bearer(signJwt(signer, claims({ email_verified: false }))), 403, /not verified/],
    ];
    for (const [what, headers, status, message] of cases) {
      const response = await webhook.post('pubsub', JSON.stringify(body), headers);
      expect(response.status, what).toBe(status);
      expect(String(response.json.error), what).toMatch(message);
    }
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('refuses malformed (400) and oversized (413) bodies from an authenticated sender', async () => {
    const before = (await webhook.jobs()).length;
    const token = signJwt(signer, claims());
    expect((await webhook.post('pubsub', '{"message": ', bearer(token))).status).toBe(400);
    expect((await push({ message: { data: '!!!not base64!!!', messageId: '1' } }, token)).status).toBe(400);
    expect((await push({ message: { data: Buffer.from('{"protoPayload": {"methodName": "compute.instances.preempted"}}').toString('base64'), messageId: '2' } }, token)).status).toBe(400);
    expect((await push({ ...pubsubPush(auditLogEntry()), padding: 'x'.repeat(9000) }, token)).status).toBe(413);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('acknowledges other audit-log entries and Eventarc event types with 200 and a log line', async () => {
    const before = (await webhook.jobs()).length;
    const token = signJwt(signer, claims());
    const stop = await push(pubsubPush(auditLogEntry({ method: 'v1.compute.instances.stop' })), token);
    expect(stop.status).toBe(200);
    expect(stop.json.status).toBe('ignored');
    const storage = await push({ bucket: 'b' }, token, { 'ce-specversion': '1.0', 'ce-type': 'google.cloud.storage.object.v1.finalized', 'ce-id': '1', 'ce-source': '//storage.googleapis.com/projects/_/buckets/b' });
    expect(storage.status).toBe(200);
    expect(await webhook.jobs()).toHaveLength(before);
    expect(webhook.logs.some((l) => String(l.msg).includes('v1.compute.instances.stop'))).toBe(true);
  });

  it('stores an Eventarc Cloud Audit Logs CloudEvent (binary mode) as the same notice as the push delivery', async () => {
    const entry = auditLogEntry({ instanceId: '1000000000000000005' });
    const ce = { 'ce-specversion': '1.0', 'ce-type': 'google.cloud.audit.log.v1.written', 'ce-id': 'projects/spotwatch-demo/logs/x/1', 'ce-source': '//cloudaudit.googleapis.com/projects/spotwatch-demo/logs/activity' };
    const viaEventarc = await push(entry, signJwt(signer, claims()), ce);
    expect(viaEventarc.status).toBe(200);
    const viaPush = await push(pubsubPush(entry), signJwt(signer, claims()));
    expect(viaPush.json.notices).toMatchObject([{ id: (viaEventarc.json.notices as { id: string }[])[0]!.id, result: 'duplicate' }]);
  });

  it('the webhook and an agent seeing the same preemption make one job', async () => {
    // What the node's agent enqueues when instance/preempted turns TRUE (the gcp-preempted parser).
    const agentNotice = gcpParsers['gcp-preempted']!('TRUE', { now: new Date(), instanceId: '1000000000000000006' })[0]!;
    expect(await agentEnqueue(redisUrl, webhook.prefix, agentNotice)).toBe('created');
    const response = await push(pubsubPush(auditLogEntry({ instanceId: '1000000000000000006' })), signJwt(signer, claims()));
    expect(response.json.notices).toMatchObject([{ id: agentNotice.id, result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === '1000000000000000006')).toHaveLength(1);
  });

  it('answers 503 (the bridge retries) while the JWKS cannot be fetched and nothing is cached', async () => {
    const other = await startWebhook({ redisUrl, config: { pubsubAudience: AUDIENCE, pubsubServiceAccount: PUSH_SA, pubsubJwksUrl: 'http://127.0.0.1:9/certs' } });
    try {
      const response = await other.post('pubsub', JSON.stringify(pubsubPush(auditLogEntry())), bearer(signJwt(signer, claims())));
      expect(response.status).toBe(503);
      expect(await other.jobs()).toHaveLength(0);
    } finally {
      await other.close();
    }
  });
});
