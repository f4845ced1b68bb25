import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, type YAMLSeq } from 'yaml';
import { REPO_ROOT } from '../../deploy/tools/helm.js';
import { SOURCE_NAMES } from '../../src/webhook/source.js';
import { parseWith } from '../../src/webhook/source.js';
import { WEBHOOK_OPTIONS } from '../../src/webhook/webhook-config.js';
import { scheduledEventEmitted, subscriptionValidation } from '../fixtures/webhook/events.js';
import { startWebhook, type WebhookHarness } from '../fixtures/webhook/harness.js';
import { makeSigner, signJwt, startJwksServer, type JwksServer } from '../fixtures/webhook/jwt.js';

/**
 * deploy/event-bridges: the infrastructure files parsed, and every endpoint path, header, key and event type
 * checked against what `spotwatch webhook` accepts — statically (routes, option defaults, the parsers on the
 * recorded fixtures) and by delivering through a real webhook with exactly the authentication each file sets.
 */

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const BRIDGES = join(REPO_ROOT, 'deploy/event-bridges');
const FIXTURES = join(REPO_ROOT, 'test/fixtures');
const NOW = new Date('2026-11-25T12:00:00Z');
const ROUTE = /\/v1\/events\/([a-z]+)(?:\?.*)?$/;
const webhookEnv = new Set<string>(Object.values(WEBHOOK_OPTIONS).flatMap((o) => [...o.env]));

// ---------------------------------------------------------------------------------------------------------
// AWS CloudFormation, with its short-form intrinsic functions.

const INTRINSICS: Record<string, string> = {
  '!Ref': 'Ref',
  '!Sub': 'Fn::Sub',
  '!GetAtt': 'Fn::GetAtt',
  '!Not': 'Fn::Not',
  '!Equals': 'Fn::Equals',
  '!If': 'Fn::If',
  '!And': 'Fn::And',
  '!Or': 'Fn::Or',
  '!Join': 'Fn::Join',
  '!Select': 'Fn::Select',
  '!Split': 'Fn::Split',
  '!Condition': 'Condition',
};
const customTags = Object.entries(INTRINSICS).flatMap(([tag, key]) => [
  { tag, resolve: (v: string) => ({ [key]: key === 'Fn::GetAtt' ? v.split('.') : v }) },
  { tag, collection: 'seq' as const, resolve: (s: YAMLSeq) => ({ [key]: s.toJSON() }) },
]);
const loadCfn = (name: string): Obj => parse(readFileSync(join(BRIDGES, 'aws', name), 'utf8'), { customTags }) as Obj;

/** Every Ref / GetAtt / Sub variable / Condition names something the template defines. */
function danglingReferences(t: Obj): string[] {
  const params = new Set(Object.keys(t.Parameters ?? {}));
  const resources = new Set(Object.keys(t.Resources ?? {}));
  const conditions = new Set(Object.keys(t.Conditions ?? {}));
  const pseudo = (n: string) => n.startsWith('AWS::');
  const bad: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== 'object') return;
    const o = v as Obj;
    if (typeof o.Ref === 'string' && !params.has(o.Ref) && !resources.has(o.Ref) && !pseudo(o.Ref)) bad.push(`Ref ${o.Ref}`);
    if (Array.isArray(o['Fn::GetAtt']) && !resources.has(o['Fn::GetAtt'][0])) bad.push(`GetAtt ${o['Fn::GetAtt'].join('.')}`);
    if (typeof o['Fn::Sub'] === 'string') {
      for (const [, name] of o['Fn::Sub'].matchAll(/\$\{([^}!]+)\}/g) as Iterable<RegExpMatchArray>) {
        const base = name!.split('.')[0]!;
        if (!params.has(base) && !resources.has(base) && !pseudo(name!)) bad.push(`Sub \${${name}}`);
      }
    }
    for (const [k, child] of Object.entries(o)) {
      if (k === 'Condition' && typeof child === 'string' && !conditions.has(child)) bad.push(`Condition ${child}`);
      walk(child);
    }
  };
  walk(t.Resources);
  walk(t.Outputs);
  walk(t.Conditions);
  return bad;
}

/** EventBridge pattern matching, for the exact-value patterns these rules use. */
function matches(pattern: Obj, event: Obj): boolean {
  return Object.entries(pattern).every(([key, want]) => {
    const have = event?.[key];
    if (Array.isArray(want)) {
      if (want.some((w) => typeof w === 'object')) throw new Error(`content filter in ${key}: extend this matcher`);
      return (Array.isArray(have) ? have : [have]).some((h) => want.includes(h));
    }
    return typeof have === 'object' && have !== null && matches(want as Obj, have as Obj);
  });
}

const rules = (t: Obj) => Object.entries(t.Resources as Obj).filter(([, r]) => r.Type === 'AWS::Events::Rule');
const subPath = (v: Obj) => (v['Fn::Sub'] as string).replace('${WebhookUrl}', 'https://spotwatch.example.com');

const awsFixtures = readdirSync(join(FIXTURES, 'aws'))
  .filter((f) => f.startsWith('eventbridge-'))
  .map((f) => {
    const text = readFileSync(join(FIXTURES, 'aws', f), 'utf8');
    return { file: f, text, event: JSON.parse(text) as Obj, notices: parseWith('eventbridge', text, NOW) };
  });

describe('AWS: CloudFormation', () => {
  const eb = loadCfn('spotwatch-eventbridge.yaml');
  const sns = loadCfn('spotwatch-sns.yaml');

  it('are well-formed templates whose references all resolve', () => {
    for (const t of [eb, sns]) {
      expect(t.AWSTemplateFormatVersion).toBe('2010-09-09');
      expect(danglingReferences(t)).toEqual([]);
      for (const [name, r] of Object.entries(t.Resources as Obj)) expect(r.Type, name).toMatch(/^AWS::[A-Za-z0-9]+::[A-Za-z0-9]+$/);
    }
  });

  it('API destination: POST to the eventbridge route with the secret in the header the webhook reads', () => {
    const dest = eb.Resources.ApiDestination.Properties;
    expect(dest.HttpMethod).toBe('POST');
    expect(ROUTE.exec(subPath(dest.InvocationEndpoint))![1]).toBe('eventbridge');
    const auth = eb.Resources.Connection.Properties;
    expect(auth.AuthorizationType).toBe('API_KEY');
    expect(auth.AuthParameters.ApiKeyAuthParameters).toEqual({ ApiKeyName: { Ref: 'SecretHeader' }, ApiKeyValue: { Ref: 'SharedSecret' } });
    expect(eb.Parameters.SecretHeader.Default).toBe(WEBHOOK_OPTIONS.eventbridgeHeader.default);
    expect(eb.Parameters.SharedSecret).toMatchObject({ NoEcho: true, MinLength: 16 }); // the webhook refuses shorter secrets
    for (const [name, rule] of rules(eb)) {
      const target = rule.Properties.Targets[0];
      expect(target.Arn, name).toEqual({ 'Fn::GetAtt': ['ApiDestination', 'Arn'] });
      expect(target.RoleArn, name).toEqual({ 'Fn::GetAtt': ['InvokeRole', 'Arn'] });
    }
    expect(eb.Resources.InvokeRole.Properties.Policies[0].PolicyDocument.Statement[0]).toMatchObject({
      Action: 'events:InvokeApiDestination',
      Resource: { 'Fn::GetAtt': ['ApiDestination', 'Arn'] },
    });
  });

  it('SNS: an HTTPS subscription on the sns route, keeping the signed envelope, and the topic ARN for the webhook', () => {
    const sub = sns.Resources.WebhookSubscription.Properties;
    expect(sub.Protocol).toBe('https');
    expect(ROUTE.exec(subPath(sub.Endpoint))![1]).toBe('sns');
    expect(sub.RawMessageDelivery).toBe(false);
    expect(sns.Outputs.TopicArn.Description).toContain(WEBHOOK_OPTIONS.snsTopicArns.env[0]);
    for (const [name, rule] of rules(sns)) expect(rule.Properties.Targets[0].Arn, name).toEqual({ Ref: 'Topic' });
    // Both templates forward exactly the same events.
    const patterns = (t: Obj) => rules(t).map(([name, r]) => [name, r.Properties.EventPattern]);
    expect(patterns(sns)).toEqual(patterns(eb));
  });

  it('the rules forward exactly the events the webhook turns into notices (recorded fixtures)', () => {
    const patterns = rules(eb).map(([, r]) => r.Properties.EventPattern as Obj);
    expect(awsFixtures.length).toBeGreaterThanOrEqual(7);
    for (const f of awsFixtures) {
      const forwarded = patterns.some((p) => matches(p, f.event));
      expect(forwarded, `${f.file}: forwarded = gives notices`).toBe(f.notices.length > 0);
    }
    // And no rule forwards an event type that no fixture shows giving a notice.
    for (const p of patterns) {
      for (const type of p['detail-type'] as string[]) {
        expect(awsFixtures.some((f) => f.event['detail-type'] === type && f.notices.length > 0 && matches(p, f.event)), type).toBe(true);
      }
    }
  });

  const cfnLint = spawnSync('cfn-lint', ['--version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!cfnLint)('pass cfn-lint (where it is installed)', () => {
    const r = spawnSync('cfn-lint', [join(BRIDGES, 'aws/spotwatch-eventbridge.yaml'), join(BRIDGES, 'aws/spotwatch-sns.yaml')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------------
// GCP and Azure scripts, run in their dry-run mode: each command as an argv.

function dryRun(script: string, env: Record<string, string>): { commands: string[][]; stderr: string; status: number | null } {
  const r = spawnSync('bash', [join(BRIDGES, script)], { env: { PATH: process.env.PATH, DRY_RUN: '1', ...env }, encoding: 'utf8' });
  const commands = r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f').slice(0, -1));
  return { commands, stderr: r.stderr, status: r.status };
}
const flag = (argv: string[], name: string) => {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv[i + 1];
};

/** Cloud Logging filter: `a.b="v"` (equals) and `a.b:"v"` (has) terms joined by AND. */
function logFilterMatches(filter: string, entry: Obj): boolean {
  return filter.split(/\s+AND\s+/).every((term) => {
    const m = /^([\w.]+)([=:])"(.*)"$/.exec(term.trim());
    if (!m) throw new Error(`filter term not understood: ${term}`);
    const value = m[1]!.split('.').reduce<unknown>((o, k) => (o as Obj | undefined)?.[k], entry);
    return typeof value === 'string' && (m[2] === '=' ? value === m[3] : value.includes(m[3]!));
  });
}

const GCP_ENV = { PROJECT: 'spotwatch-demo', WEBHOOK_URL: 'https://spotwatch.example.com' };

describe('GCP: log sink → Pub/Sub → push with OIDC', () => {
  const { commands, stderr, status } = dryRun('gcp/pubsub-push.sh', GCP_ENV);
  const sink = commands.find((c) => c.slice(1, 4).join(' ') === 'logging sinks create')!;
  const sub = commands.find((c) => c.slice(1, 4).join(' ') === 'pubsub subscriptions create')!;
  const settings = Object.fromEntries([...stderr.matchAll(/^(SPOTWATCH_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));

  it('creates the topic, the sink, the push account and the subscription', () => {
    expect(status).toBe(0);
    expect(commands.map((c) => c.slice(0, 4).join(' '))).toEqual([
      'gcloud pubsub topics create',
      'gcloud logging sinks create',
      'gcloud pubsub topics add-iam-policy-binding',
      'gcloud iam service-accounts create',
      'gcloud iam service-accounts add-iam-policy-binding',
      'gcloud pubsub subscriptions create',
    ]);
    expect(sink[5]).toBe('pubsub.googleapis.com/projects/spotwatch-demo/topics/spotwatch-preemptions');
    expect(flag(sub, '--topic')).toBe('spotwatch-preemptions');
  });

  it('the sink filter selects exactly the audit log entries the webhook turns into notices', () => {
    const filter = flag(sink, '--log-filter')!;
    expect(filter).toContain('protoPayload.methodName="compute.instances.preempted"');
    const entries: { name: string; entry: Obj; envelope: string }[] = [];
    const audit = JSON.parse(readFileSync(join(FIXTURES, 'gcp/audit-log-preempted.json'), 'utf8')) as Obj;
    entries.push({ name: 'audit-log-preempted', entry: audit, envelope: JSON.stringify({ message: { data: Buffer.from(JSON.stringify(audit)).toString('base64'), messageId: '1' }, subscription: 's' }) });
    for (const f of readdirSync(join(FIXTURES, 'gcp')).filter((n) => n.startsWith('pubsub-push-'))) {
      const envelope = readFileSync(join(FIXTURES, 'gcp', f), 'utf8');
      const data = (JSON.parse(envelope) as Obj).message.data as string;
      entries.push({ name: f, entry: JSON.parse(Buffer.from(data, 'base64').toString('utf8')) as Obj, envelope });
    }
    expect(entries.length).toBeGreaterThanOrEqual(3);
    for (const e of entries) {
      const notices = parseWith('pubsub', e.envelope, NOW);
      expect(logFilterMatches(filter, e.entry), `${e.name}: selected = gives notices`).toBe(notices.length > 0);
    }
  });

  it('pushes to the pubsub route with the audience and account it tells the webhook to expect', () => {
    expect(ROUTE.exec(flag(sub, '--push-endpoint')!)![1]).toBe('pubsub');
    expect(settings).toEqual({
      SPOTWATCH_PUBSUB_AUDIENCE: flag(sub, '--push-auth-token-audience'),
      SPOTWATCH_PUBSUB_SERVICE_ACCOUNT: flag(sub, '--push-auth-service-account'),
    });
    for (const name of Object.keys(settings)) expect(webhookEnv.has(name), name).toBe(true);
    expect(settings.SPOTWATCH_PUBSUB_AUDIENCE).toBe('https://spotwatch.example.com/v1/events/pubsub'); // Pub/Sub's default audience
  });

  it('refuses a plain-HTTP webhook URL', () => {
    const r = dryRun('gcp/pubsub-push.sh', { ...GCP_ENV, WEBHOOK_URL: 'http://spotwatch.example.com' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('https://');
  });
});

const AZ_ENV = { SUBSCRIPTION_ID: '00000000-0000-0000-0000-000000000000', RESOURCE_GROUP: 'spotwatch', WEBHOOK_URL: 'https://spotwatch.example.com', KEY: 'eg-key-0123456789abcdef' };

describe('Azure: Event Grid system topics → webhook', () => {
  const subscriptions = (env: Record<string, string>) => dryRun('azure/eventgrid.sh', { ...AZ_ENV, ...env }).commands.filter((c) => c.includes('event-subscription'));

  it('subscribes exactly the event types the webhook turns into notices, in a schema it reads', () => {
    const { commands, status } = dryRun('azure/eventgrid.sh', AZ_ENV);
    expect(status).toBe(0);
    const topics = commands.filter((c) => c.slice(0, 4).join(' ') === 'az eventgrid system-topic create');
    expect(topics.map((c) => flag(c, '--topic-type'))).toEqual(['Microsoft.ResourceNotifications.MaintenanceResources', 'Microsoft.ResourceNotifications.HealthResources']);
    for (const t of topics) expect(flag(t, '--source')).toBe(`/subscriptions/${AZ_ENV.SUBSCRIPTION_ID}`);
    const subscribed = subscriptions({}).map((c) => flag(c, '--included-event-types'));
    // Each subscribed type comes from its own topic.
    subscriptions({}).forEach((c, i) => expect(flag(c, '--included-event-types')!.startsWith(`${flag(topics[i]!, '--topic-type')}.`)).toBe(true));

    const noticeTypes = new Set<string>();
    const seenTypes = new Set<string>();
    for (const f of readdirSync(join(FIXTURES, 'azure')).filter((n) => n.startsWith('eventgrid-') || n.startsWith('cloudevent-'))) {
      const text = readFileSync(join(FIXTURES, 'azure', f), 'utf8');
      const events = [JSON.parse(text) as Obj | Obj[]].flat();
      for (const e of events) {
        const type = (e.eventType ?? e.type) as string;
        seenTypes.add(type);
        if (parseWith('eventgrid', JSON.stringify([e]), NOW).length > 0) noticeTypes.add(type);
      }
    }
    expect([...subscribed].sort()).toEqual([...noticeTypes].sort());
    expect(seenTypes.size).toBeGreaterThan(noticeTypes.size); // fixtures of types that are left out exist too
    for (const schema of ['eventgridschema', 'cloudeventschemav1_0']) {
      for (const c of subscriptions({ SCHEMA: schema })) expect(flag(c, '--event-delivery-schema')).toBe(schema);
    }
  });

  it('points at the eventgrid route, with the key where the webhook looks for it', () => {
    for (const c of subscriptions({})) {
      const url = new URL(flag(c, '--endpoint')!);
      expect(ROUTE.exec(url.pathname)![1]).toBe('eventgrid');
      expect(url.searchParams.get('code')).toBe(AZ_ENV.KEY);
      expect(flag(c, '--endpoint-type')).toBe('webhook');
    }
    for (const c of subscriptions({ AUTH: 'header' })) {
      expect(new URL(flag(c, '--endpoint')!).search).toBe('');
      const i = c.indexOf('--delivery-attribute-mapping');
      expect(c.slice(i + 1, i + 5)).toEqual(['aeg-sas-key', 'static', AZ_ENV.KEY, 'true']);
    }
    for (const c of subscriptions({ AUTH: 'entra', KEY: '', TENANT_ID: AZ_ENV.SUBSCRIPTION_ID, APP_ID_OR_URI: 'api://spotwatch' })) {
      expect(flag(c, '--azure-active-directory-tenant-id')).toBe(AZ_ENV.SUBSCRIPTION_ID);
      expect(flag(c, '--azure-active-directory-application-id-or-uri')).toBe('api://spotwatch');
    }
  });

  it('refuses a short key or an unknown auth mode', () => {
    expect(dryRun('azure/eventgrid.sh', { ...AZ_ENV, KEY: 'short' }).stderr).toContain('at least 16 characters');
    expect(dryRun('azure/eventgrid.sh', { ...AZ_ENV, AUTH: 'basic' }).status).not.toBe(0);
  });
});

it('every route the files deliver to is one the webhook serves', () => {
  const text = ['aws/spotwatch-eventbridge.yaml', 'aws/spotwatch-sns.yaml', 'gcp/pubsub-push.sh', 'azure/eventgrid.sh'].map((f) => readFileSync(join(BRIDGES, f), 'utf8')).join('\n');
  const routes = new Set([...text.matchAll(/\/v1\/events\/([a-z]+)/g)].map((m) => m[1]!));
  expect([...routes].sort()).toEqual([...SOURCE_NAMES].sort());
});

// ---------------------------------------------------------------------------------------------------------
// Deliveries through a real webhook (real Redis), authenticated exactly as the files configure the bridges.

describe('deliveries through spotwatch webhook', () => {
  const eb = loadCfn('spotwatch-eventbridge.yaml');
  const secret = 'eventbridge-secret-0123456789';
  const signer = makeSigner();
  const gcp = dryRun('gcp/pubsub-push.sh', GCP_ENV).commands.find((c) => c.slice(1, 4).join(' ') === 'pubsub subscriptions create')!;
  let jwks: JwksServer;
  let hook: WebhookHarness;

  beforeAll(async () => {
    jwks = await startJwksServer([signer.publicJwk]);
    hook = await startWebhook({
      redisUrl: inject('redisUrl'),
      config: {
        eventbridgeSecret: secret,
        eventbridgeHeader: eb.Parameters.SecretHeader.Default as string,
        pubsubAudience: flag(gcp, '--push-auth-token-audience')!,
        pubsubServiceAccount: flag(gcp, '--push-auth-service-account')!,
        pubsubJwksUrl: jwks.url,
        eventgridKey: AZ_ENV.KEY,
      },
    });
  });
  afterAll(async () => {
    await hook?.close();
    await jwks?.close();
  });

  it('EventBridge API destination: the header named in the connection carries the secret', async () => {
    const path = ROUTE.exec(subPath(eb.Resources.ApiDestination.Properties.InvocationEndpoint))![1]!;
    const warning = awsFixtures.find((f) => f.file === 'eventbridge-spot-interruption-warning.json')!;
    const r = await hook.post(path, warning.text, { [eb.Parameters.SecretHeader.Default as string]: secret });
    expect(r.status).toBe(200);
    expect((await hook.jobs()).map((j) => j.id)).toContain(warning.notices[0]!.id);
  });

  it('Pub/Sub push: a token for the audience and account of the subscription', async () => {
    const path = ROUTE.exec(flag(gcp, '--push-endpoint')!)![1]!;
    const token = signJwt(signer, {
      iss: 'https://accounts.google.com',
      aud: flag(gcp, '--push-auth-token-audience'),
      email: flag(gcp, '--push-auth-service-account'),
      email_verified: true,
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 600,
      sub: '1234567890',
    });
    const envelope = readFileSync(join(FIXTURES, 'gcp/pubsub-push-preempted.json'), 'utf8');
    const r = await hook.post(path, envelope, { authorization: `Bearer ${token}` });
    expect(r.status).toBe(200);
    const id = parseWith('pubsub', envelope, NOW)[0]!.id;
    expect((await hook.jobs()).map((j) => j.id)).toContain(id);
  });

  it('Event Grid: the validation handshake and a delivery, with the key in the URL and in the header', async () => {
    const byQuery = new URL(flag(subscriptions0(), '--endpoint')!);
    const path = ROUTE.exec(byQuery.pathname)![1]!;
    const validation = subscriptionValidation('0a1b2c3d-0000-4000-8000-00000000c0de');
    let r = await hook.post(path, JSON.stringify(validation), {}, byQuery.search);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ validationResponse: '0a1b2c3d-0000-4000-8000-00000000c0de' });
    expect((await hook.post(path, JSON.stringify(validation), {}, '?code=wrong-key-0123456789')).status).toBe(401);

    const header = dryRun('azure/eventgrid.sh', { ...AZ_ENV, AUTH: 'header' }).commands.find((c) => c.includes('event-subscription'))!;
    const i = header.indexOf('--delivery-attribute-mapping');
    const event = scheduledEventEmitted({ eventId: 'e3d1c2b4-0000-4000-8000-000000000001' });
    r = await hook.post(path, JSON.stringify([event]), { [header[i + 1]!]: header[i + 3]! });
    expect(r.status).toBe(200);
    const ids = parseWith('eventgrid', JSON.stringify([event]), NOW).map((n) => n.id);
    expect(ids.length).toBeGreaterThan(0);
    const jobs = (await hook.jobs()).map((j) => j.id);
    for (const id of ids) expect(jobs).toContain(id);
  });
});

function subscriptions0(): string[] {
  return dryRun('azure/eventgrid.sh', AZ_ENV).commands.find((c) => c.includes('event-subscription'))!;
}
