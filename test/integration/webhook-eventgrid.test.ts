import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { azureParsers } from '../../providers/azure/parsers.js';
import { blobCreated, scheduledEventEmitted, subscriptionValidation } from '../fixtures/webhook/events.js';
import { agentEnqueue, startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';
import { makeSigner, signJwt, startJwksServer, type JwksServer, type TestSigner } from '../fixtures/webhook/jwt.js';

const redisUrl = inject('redisUrl');
const KEY = 'eg-key-0123456789abcdefABCDEF';
const TENANT = '11111111-2222-3333-4444-555555555555';
const AUDIENCE = 'api://spotwatch-webhook';
const EVENT_GRID_APP = '4962773b-9cdb-44cf-a8bf-237846a00ab7';

describe('webhook: Azure Event Grid (shared key and Entra ID tokens)', () => {
  let signer: TestSigner;
  let jwks: JwksServer;
  let webhook: WebhookHarness;
  const keyed = { 'aeg-sas-key': KEY };
  const claims = (over: Record<string, unknown> = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return { iss: `https://login.microsoftonline.com/${TENANT}/v2.0`, aud: AUDIENCE, tid: TENANT, azp: EVENT_GRID_APP, iat: now, nbf: now, exp: now + 3600, ...over };
  };
  const entra = (over: Record<string, unknown> = {}) => ({ authorization: `Bearer ${signJwt(signer, claims(over))}` });

  beforeAll(async () => {
    signer = makeSigner();
    jwks = await startJwksServer([signer.publicJwk]);
    webhook = await startWebhook({
      redisUrl,
      config: { eventgridKey: KEY, eventgridTenantId: TENANT, eventgridAudience: AUDIENCE, eventgridClientId: EVENT_GRID_APP, eventgridJwksUrl: jwks.url, maxBodyBytes: '16384' },
    });
  });
  afterAll(async () => {
    await webhook.close();
    await jwks.close();
  });

  it('answers the CloudEvents abuse-protection handshake (OPTIONS) for an allowed origin only', async () => {
    const ok = await fetch(`${webhook.url}/v1/events/eventgrid`, { method: 'OPTIONS', headers: { 'WebHook-Request-Origin': 'eventgrid.azure.net' } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('webhook-allowed-origin')).toBe('eventgrid.azure.net');
    expect(ok.headers.get('webhook-allowed-rate')).toBe('50');
    const denied = await fetch(`${webhook.url}/v1/events/eventgrid`, { method: 'OPTIONS', headers: { 'WebHook-Request-Origin': 'evil.example.com' } });
    expect(denied.status).toBe(403);
    expect(denied.headers.get('webhook-allowed-origin')).toBeNull();
    expect((await fetch(`${webhook.url}/v1/events/eventgrid`, { method: 'OPTIONS' })).status).toBe(400);
  });

  it('echoes the subscription validation code (authenticated), and refuses it without credentials', async () => {
    const response = await webhook.post('eventgrid', JSON.stringify(subscriptionValidation('512d38b6-c7b8-40c8-89fe-f46f9e9622b6')), {}, `?code=${KEY}`);
    expect(response.status).toBe(200);
    expect(response.json).toEqual({ validationResponse: '512d38b6-c7b8-40c8-89fe-f46f9e9622b6' });
    expect((await webhook.post('eventgrid', JSON.stringify(subscriptionValidation()), entra())).json).toHaveProperty('validationResponse');
    expect((await webhook.post('eventgrid', JSON.stringify(subscriptionValidation()))).status).toBe(401);
  });

  it('stores a Preempt scheduled event (Event Grid schema, aeg-sas-key) as one job per VM, the `eventgrid` parser\'s notices', async () => {
    const body = JSON.stringify([scheduledEventEmitted({ resources: ['vmss_31', 'vmss_32'] })]);
    const response = await webhook.post('eventgrid', body, keyed);
    expect(response.status).toBe(200);
    const expected = azureParsers.eventgrid!(body, { now: new Date() }).map((n) => n.id);
    expect((response.json.notices as { id: string }[]).map((n) => n.id)).toEqual(expected);
    const jobs = (await webhook.jobs()).filter((j) => expected.includes(j.id));
    expect(jobs.map((j) => j.data.instanceId).sort()).toEqual(['vmss_31', 'vmss_32']);
    expect(jobs[0]!.data).toMatchObject({ provider: 'azure', kind: 'interruption', source: 'eventgrid' });
  });

  it('stores a CloudEvents 1.0 delivery with an Entra ID token, and the key in the code query parameter', async () => {
    const ce = await webhook.post('eventgrid', JSON.stringify(scheduledEventEmitted({ resources: ['vmss_33'], schema: 'cloudevents' })), { ...entra(), 'content-type': 'application/cloudevents+json; charset=utf-8' });
    expect(ce.status).toBe(200);
    expect(ce.json.notices).toMatchObject([{ instanceId: 'vmss_33', result: 'created' }]);
    const query = await webhook.post('eventgrid', JSON.stringify([scheduledEventEmitted({ resources: ['vmss_34'] })]), {}, `?code=${encodeURIComponent(KEY)}`);
    expect(query.status).toBe(200);
  });

  it('acknowledges a redelivered event (same EventId) and keeps one job', async () => {
    const body = JSON.stringify([scheduledEventEmitted({ resources: ['vmss_35'] })]);
    await webhook.post('eventgrid', body, keyed);
    const again = await webhook.post('eventgrid', body, keyed);
    expect(again.status).toBe(200);
    expect(again.json.notices).toMatchObject([{ result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === 'vmss_35')).toHaveLength(1);
  });

  it('refuses bad keys and bad tokens (401), a token for another app (403), and stores nothing', async () => {
    const before = (await webhook.jobs()).length;
    const body = JSON.stringify([scheduledEventEmitted({ resources: ['vmss_36'] })]);
    const cases: [string, Record<string, string>, string, number][] = [
      ['no credentials', {}, '', 401],
      ['wrong key header', { 'aeg-sas-key': `${KEY}0` }, '', 401],
      ['wrong key query', {}, '?code=nope', 401],
      ['key twice in the query', {}, `?code=${KEY}&code=${KEY}`, 400],
      ['wrong audience', entra({ aud: 'api://someone-else' }), '', 401],
      ['expired token', entra({ exp: Math.floor(Date.now() / 1000) - 3600 }), '', 401],
      ['other tenant issuer', entra({ iss: 'https://login.microsoftonline.com/99999999-2222-3333-4444-555555555555/v2.0' }), '', 401],
      ['other tenant id', entra({ tid: '99999999-2222-3333-4444-555555555555' }), '', 401],
      ['forged signature', { authorization: `Bearer ${signJwt(makeSigner(signer.kid), claims())}` }, '', 401],
      ['another app', entra({ azp: 'aaaaaaaa-0000-0000-0000-000000000000' }), '', 403],
    ];
    for (const [what, headers, query, status] of cases) {
      expect((await webhook.post('eventgrid', body, headers, query)).status, what).toBe(status);
    }
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('refuses malformed (400) and oversized (413) deliveries, and acknowledges unknown event types (200, logged)', async () => {
    const before = (await webhook.jobs()).length;
    expect((await webhook.post('eventgrid', '[{"id": 1,', keyed)).status).toBe(400);
    expect((await webhook.post('eventgrid', '[]', keyed)).status).toBe(400);
    expect((await webhook.post('eventgrid', '[1, 2]', keyed)).status).toBe(400);
    const broken = scheduledEventEmitted({ resources: ['vmss_37'] });
    ((broken.data as Record<string, Record<string, Record<string, unknown>>>).resourceInfo!.properties!).EventStatus = 'Whenever';
    expect((await webhook.post('eventgrid', JSON.stringify([broken]), keyed)).status).toBe(400);
    expect((await webhook.post('eventgrid', JSON.stringify(Array.from({ length: 20 }, () => scheduledEventEmitted())), keyed)).status).toBe(413);
    const blob = await webhook.post('eventgrid', JSON.stringify(blobCreated()), keyed);
    expect(blob.status).toBe(200);
    expect(blob.json.status).toBe('ignored');
    expect(webhook.logs.some((l) => String(l.msg).includes('Microsoft.Storage.BlobCreated'))).toBe(true);
    expect(await webhook.jobs()).toHaveLength(before);
  });

  it('the webhook and the agent (Scheduled Events) seeing the same event make one job', async () => {
    const eventId = 'A1B2C3D4-0000-4000-8000-000000000038';
    const delivery = scheduledEventEmitted({ eventId, resources: ['vmss_38'] });
    const properties = (delivery.data as { resourceInfo: { properties: Record<string, unknown> } }).resourceInfo.properties;
    const imdsDocument = JSON.stringify({ DocumentIncarnation: 3, Events: [properties] });
    const agentNotice = azureParsers['azure-scheduled-events']!(imdsDocument, { now: new Date(), instanceId: 'vmss_38' })[0]!;
    expect(await agentEnqueue(redisUrl, webhook.prefix, agentNotice)).toBe('created');
    const response = await webhook.post('eventgrid', JSON.stringify([delivery]), keyed);
    expect(response.json.notices).toMatchObject([{ id: agentNotice.id, result: 'duplicate' }]);
    expect((await webhook.jobs()).filter((j) => j.data.instanceId === 'vmss_38')).toHaveLength(1);
  });
});
