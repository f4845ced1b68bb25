import { bearerToken, JwksCache, JwksUnavailableError, JwtError, verifyJwt } from '../jwt.js';
import { forbidden, malformed, secretsEqual, singleHeader, unauthenticated, WebhookRejection } from '../http.js';
import { isObject, parseWith, short, type Delivery, type EventSource, type SourceResult } from '../source.js';

export interface EventGridSourceOptions {
  /** Shared key (aeg-sas-key header or `code` query parameter); undefined: not accepted. */
  key: string | undefined;
  /** Entra ID bearer tokens: tenant and audience (both or neither); undefined: not accepted. */
  tenantId: string | undefined;
  audience: string | undefined;
  /** If set, the token's appid / azp must be this. */
  clientId?: string | undefined;
  jwksUrl: string;
  jwksCacheMs: number;
  /** WebHook-Request-Origin values the OPTIONS handshake allows (`*`: any). */
  allowedOrigins: readonly string[];
  /** Announced as WebHook-Allowed-Rate (requests per second). */
  allowedRate: number;
  onJwksFetch?: ((result: 'ok' | 'error') => void) | undefined;
  now?: (() => number) | undefined;
}

export const SUBSCRIPTION_VALIDATION_EVENT = 'Microsoft.EventGrid.SubscriptionValidationEvent';
const CHALLENGE = { 'www-authenticate': 'Bearer realm="spotwatch"' };

/**
 * `POST /v1/events/eventgrid` (+ `OPTIONS`): Azure Event Grid, in the Event Grid schema or CloudEvents 1.0.
 * Authentication: the shared key (`aeg-sas-key` header, or `?code=` in the endpoint URL) compared in constant
 * time, or an Entra ID bearer token (issuer of the configured tenant, `aud`, `tid`, optionally appid/azp).
 * Handshakes: the SubscriptionValidationEvent is answered `{"validationResponse": <validationCode>}`; the
 * CloudEvents abuse-protection OPTIONS request gets `WebHook-Allowed-Origin` for an allowed origin.
 */
export function eventGridSource(options: EventGridSourceOptions): EventSource {
  const entra = options.tenantId !== undefined && options.audience !== undefined;
  const jwks = entra ? new JwksCache({ url: options.jwksUrl, cacheMs: options.jwksCacheMs, onFetch: options.onJwksFetch, now: options.now }) : undefined;
  const issuers = entra ? [`https://sts.windows.net/${options.tenantId}/`, `https://login.microsoftonline.com/${options.tenantId}/v2.0`] : [];
  const allowed = options.allowedOrigins.map((o) => o.toLowerCase());

  async function authenticate(delivery: Delivery): Promise<void> {
    const token = bearerToken(singleHeader(delivery.headers, 'authorization'));
    if (token && jwks) {
      let claims: Record<string, unknown>;
      try {
        claims = await verifyJwt(token, jwks, { issuers, audience: options.audience!, now: options.now });
      } catch (err) {
        if (err instanceof JwtError) throw unauthenticated(`Entra ID token rejected: ${err.message}`, CHALLENGE);
        if (err instanceof JwksUnavailableError) throw new WebhookRejection(503, 'upstream_failed', err.message, { 'retry-after': '10' });
        throw err;
      }
      if (claims.tid !== options.tenantId) throw unauthenticated(`Entra ID token tenant ${short(claims.tid, 40)} is not the configured tenant`, CHALLENGE);
      if (options.clientId !== undefined && claims.appid !== options.clientId && claims.azp !== options.clientId) {
        throw forbidden(`Entra ID token was issued to ${short(claims.appid ?? claims.azp, 60)}, not the configured --eventgrid-client-id`);
      }
      return;
    }
    if (options.key !== undefined) {
      const header = singleHeader(delivery.headers, 'aeg-sas-key');
      const query = delivery.query.getAll('code');
      if (query.length > 1) throw malformed('query parameter code given more than once');
      const presented = header ?? query[0];
      if (presented !== undefined) {
        if (!secretsEqual(presented, options.key)) throw unauthenticated('wrong Event Grid key');
        return;
      }
    }
    const expected = [options.key !== undefined ? 'an aeg-sas-key header or code query parameter' : undefined, jwks ? 'an Entra ID bearer token' : undefined];
    throw unauthenticated(`missing ${expected.filter((e) => e !== undefined).join(' or ')}`, jwks ? CHALLENGE : {});
  }

  return {
    name: 'eventgrid',
    enabled: options.key !== undefined || entra,
    methods: ['POST', 'OPTIONS'],
    async handle(delivery: Delivery): Promise<SourceResult> {
      if (delivery.method === 'OPTIONS') {
        // CloudEvents 1.0 webhook abuse protection: only an allowed origin gets the permission header.
        const origin = singleHeader(delivery.headers, 'webhook-request-origin');
        if (!origin) throw malformed('OPTIONS without WebHook-Request-Origin (not a CloudEvents abuse-protection handshake)');
        if (!allowed.includes('*') && !allowed.includes(origin.toLowerCase())) throw forbidden(`origin ${short(origin, 100)} is not in --eventgrid-allowed-origins`);
        return {
          type: 'reply',
          status: 200,
          headers: { 'webhook-allowed-origin': origin, 'webhook-allowed-rate': String(options.allowedRate), allow: 'POST, OPTIONS' },
          handshake: 'cloudevents_options',
        };
      }
      await authenticate(delivery);
      const { text, value } = await delivery.readJson();
      const events = Array.isArray(value) ? value : [value];
      if (events.length === 0) throw malformed('empty Event Grid delivery');
      if (!events.every(isObject)) throw malformed('an Event Grid delivery is an event object or an array of them');
      const validation = events.find((e) => e.eventType === SUBSCRIPTION_VALIDATION_EVENT || e.type === SUBSCRIPTION_VALIDATION_EVENT);
      if (validation) {
        const data = validation.data;
        if (!isObject(data) || typeof data.validationCode !== 'string' || data.validationCode === '') throw malformed('SubscriptionValidationEvent without data.validationCode');
        return { type: 'reply', status: 200, body: { validationResponse: data.validationCode }, handshake: 'eventgrid_validation' };
      }
      const notices = parseWith('eventgrid', text, delivery.now);
      const types = [...new Set(events.map((e) => short(e.eventType ?? e.type, 100)))];
      const detail = { events: events.length, types, eventIds: events.slice(0, 10).map((e) => short(e.id, 80)) };
      return notices.length > 0 ? { type: 'notices', notices, detail } : { type: 'notices', notices, ignored: `Event Grid ${types.join(', ')} announces nothing`, detail };
    },
  };
}
