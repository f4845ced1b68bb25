import { z } from 'zod';
import { boolString, CONFIG_OPTIONS, intString, loadOptionTable, readableFile, redactUrl, urlString, type ConfigOrigin, type OptionSpec } from '../config.js';
import type { Logger } from '../logger.js';

/**
 * Configuration of `spotwatch webhook`: the same shape and precedence as `CONFIG_OPTIONS` in src/config.ts
 * (explicit flag, then the first environment variable set, then the default; every problem reported at once).
 * Every secret and every expected identity is a flag or an environment variable.
 */
export const GOOGLE_JWKS_URL = 'https://www.googleapis.com/oauth2/v3/certs';
export const ENTRA_JWKS_URL = 'https://login.microsoftonline.com/common/discovery/v2.0/keys';

export const WEBHOOK_OPTIONS = {
  host: { flag: '--host', env: ['SPOTWATCH_WEBHOOK_HOST'], default: '0.0.0.0', description: 'Address the webhook listens on.' },
  port: { flag: '--port', env: ['SPOTWATCH_WEBHOOK_PORT', 'PORT'], default: '8080', description: 'Port the webhook listens on (0: any free port). /healthz, /readyz and /metrics are served on it too.' },
  redisUrl: CONFIG_OPTIONS.redisUrl,
  queuePrefix: CONFIG_OPTIONS.queuePrefix,
  logLevel: CONFIG_OPTIONS.logLevel,
  tlsCert: { flag: '--tls-cert', env: ['SPOTWATCH_WEBHOOK_TLS_CERT'], description: 'PEM certificate chain file: serve HTTPS (with --tls-key). Default: plain HTTP behind a TLS-terminating load balancer.' },
  tlsKey: { flag: '--tls-key', env: ['SPOTWATCH_WEBHOOK_TLS_KEY'], description: 'PEM private key file of --tls-cert.' },
  maxBodyBytes: { flag: '--max-body-bytes', env: ['SPOTWATCH_WEBHOOK_MAX_BODY_BYTES'], default: '262144', description: 'Largest request body accepted (413 above it). Every bridge caps one delivery at 256 KiB or less, except Event Grid batches (1 MiB).' },
  rateLimit: { flag: '--rate-limit', env: ['SPOTWATCH_WEBHOOK_RATE_LIMIT'], default: '50', description: 'Requests per second allowed per source (token bucket; 429 with Retry-After beyond it).' },
  rateBurst: { flag: '--rate-burst', env: ['SPOTWATCH_WEBHOOK_RATE_BURST'], default: '100', description: 'Bucket size of --rate-limit: how many requests a source may send at once.' },
  enqueueTimeoutMs: { flag: '--enqueue-timeout', env: ['SPOTWATCH_WEBHOOK_ENQUEUE_TIMEOUT_MS'], default: '2000', description: 'How long storing one notice in Redis may take before the delivery is answered 503 (the bridge retries).' },
  eventbridgeSecret: { flag: '--eventbridge-secret', env: ['SPOTWATCH_EVENTBRIDGE_SECRET'], secret: true, description: 'EventBridge API destination: the API key value of the connection. Enables POST /v1/events/eventbridge.' },
  eventbridgeHeader: { flag: '--eventbridge-header', env: ['SPOTWATCH_EVENTBRIDGE_HEADER'], default: 'x-spotwatch-secret', description: 'EventBridge API destination: the API key name (the header carrying the secret).' },
  snsTopicArns: { flag: '--sns-topic-arns', env: ['SPOTWATCH_SNS_TOPIC_ARNS'], description: 'Comma-separated SNS topic ARNs whose subscriptions are confirmed and whose messages are accepted. Enables POST /v1/events/sns.' },
  snsMaxAgeSeconds: { flag: '--sns-max-age', env: ['SPOTWATCH_SNS_MAX_AGE_S'], default: '3600', description: 'SNS messages whose signed Timestamp is older than this many seconds are refused (replay window).' },
  snsCaFile: { flag: '--sns-ca-file', env: ['SPOTWATCH_SNS_CA_FILE'], description: 'Extra PEM CA trusted when fetching SNS signing certificates and confirming subscriptions (a TLS-intercepting proxy); default: the system CAs.' },
  pubsubAudience: { flag: '--pubsub-audience', env: ['SPOTWATCH_PUBSUB_AUDIENCE'], description: 'Pub/Sub push (and Eventarc): the audience of the push OIDC token (default in GCP: the push endpoint URL). Enables POST /v1/events/pubsub (with --pubsub-service-account).' },
  pubsubServiceAccount: { flag: '--pubsub-service-account', env: ['SPOTWATCH_PUBSUB_SERVICE_ACCOUNT'], description: 'Pub/Sub push: the service account email the push subscription authenticates as (the token\'s email claim).' },
  pubsubJwksUrl: { flag: '--pubsub-jwks-url', env: ['SPOTWATCH_PUBSUB_JWKS_URL'], default: GOOGLE_JWKS_URL, description: "Pub/Sub push: JWKS of the token signer (Google's OAuth2 certificates)." },
  eventgridKey: { flag: '--eventgrid-key', env: ['SPOTWATCH_EVENTGRID_KEY'], secret: true, description: 'Event Grid: shared key, sent by the subscription in the aeg-sas-key header (a delivery property) or the `code` query parameter of the endpoint URL. Enables POST /v1/events/eventgrid.' },
  eventgridTenantId: { flag: '--eventgrid-tenant-id', env: ['SPOTWATCH_EVENTGRID_TENANT_ID', 'AZURE_TENANT_ID'], description: 'Event Grid with Entra ID authentication: the tenant of the bearer token (tid; issuer sts.windows.net/<tid>/ or login.microsoftonline.com/<tid>/v2.0). Enables the route with --eventgrid-audience.' },
  eventgridAudience: { flag: '--eventgrid-audience', env: ['SPOTWATCH_EVENTGRID_AUDIENCE'], description: 'Event Grid with Entra ID: the application ID URI or client id of the webhook\'s app registration (the token\'s aud).' },
  eventgridClientId: { flag: '--eventgrid-client-id', env: ['SPOTWATCH_EVENTGRID_CLIENT_ID'], description: 'Event Grid with Entra ID: if set, the token\'s appid / azp must be this (the app that Event Grid delivers as).' },
  eventgridJwksUrl: { flag: '--eventgrid-jwks-url', env: ['SPOTWATCH_EVENTGRID_JWKS_URL'], default: ENTRA_JWKS_URL, description: 'Event Grid with Entra ID: JWKS of the token signer.' },
  eventgridAllowedOrigins: { flag: '--eventgrid-allowed-origins', env: ['SPOTWATCH_EVENTGRID_ALLOWED_ORIGINS'], default: 'eventgrid.azure.net', description: 'CloudEvents abuse-protection handshake (OPTIONS): comma-separated WebHook-Request-Origin values allowed to deliver.' },
  jwksCacheSeconds: { flag: '--jwks-cache', env: ['SPOTWATCH_WEBHOOK_JWKS_CACHE_S'], default: '3600', description: 'How long fetched JWKS keys are reused (an unknown kid refetches, at most every 30 s).' },
  lookup: { flag: '--lookup', env: ['SPOTWATCH_WEBHOOK_LOOKUP'], default: 'false', description: 'After storing a notice, resolve its instance to a node (registry, then the cloud SDK; see docs/webhook.md) and log it.' },
} as const satisfies Record<string, OptionSpec>;

export type WebhookConfigKey = keyof typeof WEBHOOK_OPTIONS;

const listString = (item: z.ZodString, what: string) =>
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== ''),
    )
    .pipe(z.array(item).min(1, `must list at least one ${what}`));

const SNS_TOPIC_ARN = /^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$/;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export const webhookConfigSchema = z
  .object({
    host: z.string().min(1),
    port: intString(0, 65535),
    redisUrl: urlString(['redis:', 'rediss:']),
    queuePrefix: z.string().min(1).regex(/^[^:\s]+$/, 'must not contain ":" or spaces'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    tlsCert: readableFile.optional(),
    tlsKey: readableFile.optional(),
    maxBodyBytes: intString(1024, 16 * 1024 * 1024),
    rateLimit: intString(1, 100_000),
    rateBurst: intString(1, 1_000_000),
    enqueueTimeoutMs: intString(50, 60_000),
    eventbridgeSecret: z.string().min(16, 'must be at least 16 characters (use a random secret)').optional(),
    eventbridgeHeader: z.string().regex(HEADER_NAME, 'must be an HTTP header name').transform((s) => s.toLowerCase()),
    snsTopicArns: listString(z.string().regex(SNS_TOPIC_ARN, 'must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)'), 'topic ARN').optional(),
    snsMaxAgeSeconds: intString(60, 30 * 24 * 3600),
    snsCaFile: readableFile.optional(),
    pubsubAudience: z.string().min(1).optional(),
    pubsubServiceAccount: z.string().regex(EMAIL, 'must be a service account email').optional(),
    pubsubJwksUrl: urlString(['http:', 'https:']),
    eventgridKey: z.string().min(16, 'must be at least 16 characters (use a random secret)').optional(),
    eventgridTenantId: z.string().regex(/^[0-9a-fA-F-]{36}$/, 'must be a tenant id (GUID)').optional(),
    eventgridAudience: z.string().min(1).optional(),
    eventgridClientId: z.string().min(1).optional(),
    eventgridJwksUrl: urlString(['http:', 'https:']),
    eventgridAllowedOrigins: listString(z.string().min(1), 'origin'),
    jwksCacheSeconds: intString(30, 7 * 24 * 3600),
    lookup: boolString,
  })
  .superRefine((c, ctx) => {
    const need = (cond: boolean, path: WebhookConfigKey, message: string) => {
      if (cond) ctx.addIssue({ code: 'custom', path: [path], message });
    };
    need(!!c.tlsCert !== !!c.tlsKey, c.tlsCert ? 'tlsKey' : 'tlsCert', 'HTTPS needs both --tls-cert and --tls-key');
    need(!!c.pubsubAudience !== !!c.pubsubServiceAccount, c.pubsubAudience ? 'pubsubServiceAccount' : 'pubsubAudience', 'Pub/Sub push needs both --pubsub-audience and --pubsub-service-account');
    need(!!c.eventgridTenantId !== !!c.eventgridAudience, c.eventgridTenantId ? 'eventgridAudience' : 'eventgridTenantId', 'Event Grid Entra ID auth needs both --eventgrid-tenant-id and --eventgrid-audience');
    need(c.rateBurst < c.rateLimit, 'rateBurst', 'must be at least --rate-limit');
    const anySource = c.eventbridgeSecret || c.snsTopicArns || c.pubsubAudience || c.eventgridKey || c.eventgridTenantId;
    need(!anySource, 'eventbridgeSecret', 'no source is configured: set at least one of --eventbridge-secret, --sns-topic-arns, --pubsub-audience + --pubsub-service-account, --eventgrid-key, --eventgrid-tenant-id + --eventgrid-audience');
  });

export type WebhookConfig = z.infer<typeof webhookConfigSchema>;

export function loadWebhookConfig(
  options: Partial<Record<WebhookConfigKey, string | undefined>>,
  env: NodeJS.ProcessEnv = process.env,
): { config: WebhookConfig; origins: Record<WebhookConfigKey, ConfigOrigin> } {
  return loadOptionTable(WEBHOOK_OPTIONS, webhookConfigSchema, options, env);
}

/** Logs the effective configuration once at start, with secrets replaced by `***`. */
export function logEffectiveWebhookConfig(logger: Logger, config: WebhookConfig, origins: Record<WebhookConfigKey, ConfigOrigin>): void {
  const shown: Record<string, unknown> = { ...config, redisUrl: redactUrl(config.redisUrl) };
  for (const [key, spec] of Object.entries(WEBHOOK_OPTIONS) as [string, OptionSpec][]) {
    if (spec.secret && shown[key] !== undefined) shown[key] = '***';
  }
  logger.info({ config: shown, origins }, 'effective configuration');
}
