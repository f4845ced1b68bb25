import { Counter, Histogram } from 'prom-client';
import { Metrics } from '../metrics.js';

/**
 * The webhook process's metrics: everything `Metrics` has (notices, enqueue results, detection-to-enqueue
 * latency) plus the webhook's own, on the same per-process registry.
 */
export class WebhookMetrics extends Metrics {
  readonly requestsTotal = new Counter({
    name: 'spotwatch_webhook_requests_total',
    help: 'Deliveries answered, by source and HTTP status.',
    labelNames: ['source', 'status'] as const,
    registers: [this.registry],
  });

  readonly rejectedTotal = new Counter({
    name: 'spotwatch_webhook_rejected_total',
    help: 'Deliveries refused, by source and reason (unauthenticated, forbidden, malformed, too_large, unsupported_media_type, rate_limited, stale, store_unavailable, not_configured).',
    labelNames: ['source', 'reason'] as const,
    registers: [this.registry],
  });

  readonly ignoredTotal = new Counter({
    name: 'spotwatch_webhook_ignored_total',
    help: 'Authenticated deliveries acknowledged without a notice (an event type that announces nothing), by source.',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly handshakesTotal = new Counter({
    name: 'spotwatch_webhook_handshakes_total',
    help: 'Subscription handshakes answered, by source and kind (sns_subscription_confirmed, sns_unsubscribe, eventgrid_validation, cloudevents_options).',
    labelNames: ['source', 'kind'] as const,
    registers: [this.registry],
  });

  readonly keyFetchesTotal = new Counter({
    name: 'spotwatch_webhook_key_fetches_total',
    help: 'Fetches of verification keys (SNS signing certificates, JWKS), by kind and result (ok, error).',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });

  readonly requestDurationSeconds = new Histogram({
    name: 'spotwatch_webhook_request_duration_seconds',
    help: 'Time from a delivery arriving to its answer (includes storing the notices in Redis), by source.',
    labelNames: ['source'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
}
