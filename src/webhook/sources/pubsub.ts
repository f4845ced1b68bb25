import { bearerToken, JwksCache, JwksUnavailableError, JwtError, verifyJwt } from '../jwt.js';
import { forbidden, malformed, singleHeader, unauthenticated, WebhookRejection } from '../http.js';
import { isObject, parseWith, short, type Delivery, type EventSource, type SourceResult } from '../source.js';

export const GOOGLE_ISSUERS = ['accounts.google.com', 'https://accounts.google.com'] as const;

export interface PubsubSourceOptions {
  /** Expected `aud`; undefined disables the route. */
  audience: string | undefined;
  /** Expected `email`: the push subscription's service account. */
  serviceAccount: string | undefined;
  jwksUrl: string;
  jwksCacheMs: number;
  onJwksFetch?: ((result: 'ok' | 'error') => void) | undefined;
  now?: (() => number) | undefined;
}

const CHALLENGE = { 'www-authenticate': 'Bearer realm="spotwatch", error="invalid_token"' };
const AUDIT_LOG_WRITTEN = 'google.cloud.audit.log.v1.written';
const PUBSUB_PUBLISHED = 'google.cloud.pubsub.topic.v1.messagePublished';

/**
 * `POST /v1/events/pubsub`: a Pub/Sub push subscription (or an Eventarc trigger) on the Compute audit log.
 * `Authorization: Bearer` carries Google's OIDC token: signature against Google's JWKS, `iss`
 * accounts.google.com, `aud` as configured, `exp`, `email` = the push service account, `email_verified`.
 * Bodies: the push envelope `{message: {data, messageId}, subscription}`; Eventarc binary-mode CloudEvents
 * (`ce-type` messagePublished: the same envelope; audit.log.v1.written: the log entry itself, wrapped into
 * the envelope). Either way the `pubsub` parser normalizes it.
 */
export function pubsubSource(options: PubsubSourceOptions): EventSource {
  const jwks = new JwksCache({ url: options.jwksUrl, cacheMs: options.jwksCacheMs, onFetch: options.onJwksFetch, now: options.now });
  const expectedEmail = options.serviceAccount?.toLowerCase();
  return {
    name: 'pubsub',
    enabled: options.audience !== undefined && options.serviceAccount !== undefined,
    methods: ['POST'],
    async handle(delivery: Delivery): Promise<SourceResult> {
      const token = bearerToken(singleHeader(delivery.headers, 'authorization'));
      if (!token) throw unauthenticated('missing Authorization: Bearer token', CHALLENGE);
      let claims: Record<string, unknown>;
      try {
        claims = await verifyJwt(token, jwks, { issuers: GOOGLE_ISSUERS, audience: options.audience!, now: options.now });
      } catch (err) {
        if (err instanceof JwtError) throw unauthenticated(`push token rejected: ${err.message}`, CHALLENGE);
        if (err instanceof JwksUnavailableError) throw new WebhookRejection(503, 'upstream_failed', err.message, { 'retry-after': '10' });
        throw err;
      }
      if (typeof claims.email !== 'string' || claims.email.toLowerCase() !== expectedEmail) {
        throw forbidden(`push token email ${short(claims.email, 100)} is not the configured push service account`);
      }
      if (claims.email_verified !== true && claims.email_verified !== 'true') throw forbidden('push token email is not verified');

      const { text, value } = await delivery.readJson();
      if (!isObject(value)) throw malformed('a Pub/Sub push delivery is a JSON object');
      const ceType = singleHeader(delivery.headers, 'ce-type');
      let envelope = text;
      let summary: string;
      if (ceType !== undefined && ceType !== PUBSUB_PUBLISHED) {
        if (ceType !== AUDIT_LOG_WRITTEN) return { type: 'notices', notices: [], ignored: `Eventarc event type ${short(ceType, 100)} announces nothing` };
        const ceId = singleHeader(delivery.headers, 'ce-id');
        if (!ceId) throw malformed('Eventarc delivery without ce-id');
        envelope = JSON.stringify({ message: { data: Buffer.from(text, 'utf8').toString('base64'), messageId: ceId }, subscription: singleHeader(delivery.headers, 'ce-source') });
        summary = `audit log ${short(isObject(value.protoPayload) ? value.protoPayload.methodName : undefined, 100)}`;
      } else {
        summary = describePush(value);
      }
      const notices = parseWith('pubsub', envelope, delivery.now);
      const detail = { messageId: short(isObject(value.message) ? (value.message.messageId ?? value.message.message_id) : singleHeader(delivery.headers, 'ce-id'), 100), subscription: short(value.subscription, 200) };
      return notices.length > 0 ? { type: 'notices', notices, detail } : { type: 'notices', notices, ignored: `Pub/Sub message (${summary}) announces nothing`, detail };
    },
  };
}

/** The audit-log method of a push envelope, for the log line of an ignored message (best effort). */
function describePush(value: Record<string, unknown>): string {
  try {
    const message = value.message as Record<string, unknown>;
    const entry = JSON.parse(Buffer.from(String(message.data), 'base64').toString('utf8')) as Record<string, unknown>;
    const proto = entry.protoPayload as Record<string, unknown> | undefined;
    return proto ? `audit log ${short(proto.methodName, 100)}` : 'not an audit log entry';
  } catch {
    return 'data is not a JSON log entry';
  }
}
