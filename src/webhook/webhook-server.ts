import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { describeError, SpotwatchError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { InstanceLocator } from '../lookup/instance-locator.js';
import type { Notice } from '../notice.js';
import type { NoticeQueue, StoredNotice } from '../queue/notice-queue.js';
import { readBody, strictJson, TokenBucket, WebhookRejection, type RejectReason } from './http.js';
import type { SnsHttpsOptions } from './sns.js';
import { SOURCE_NAMES, type Delivery, type EventSource, type SourceName, type SourceResult } from './source.js';
import { eventBridgeSource } from './sources/eventbridge.js';
import { eventGridSource } from './sources/eventgrid.js';
import { pubsubSource } from './sources/pubsub.js';
import { snsSource } from './sources/sns.js';
import type { WebhookConfig } from './webhook-config.js';
import { WebhookMetrics } from './webhook-metrics.js';

export interface WebhookServerOptions {
  config: WebhookConfig;
  queue: NoticeQueue;
  logger: Logger;
  metrics?: WebhookMetrics | undefined;
  /** How the SNS verifier reaches the certificate host (tests: their own CA and a local address). */
  snsHttps?: SnsHttpsOptions | undefined;
  /** When set, each newly stored notice's instance is resolved (after the answer) and logged. */
  locator?: InstanceLocator | undefined;
  /** Clock (tests). */
  now?: (() => number) | undefined;
}

const PREFIX = '/v1/events/';
const ENQUEUE_RETRY_MS = 100;

/**
 * `spotwatch webhook`: one node:http(s) server for the four bridge routes and /healthz, /readyz, /metrics.
 *
 * Per delivery: route and method → per-source rate limit (429) → the source authenticates (header-level
 * credentials before the body is read; SNS signs the body) → strict, size-limited JSON → the same parsers as
 * `spotwatch parse` → every notice stored in Redis (job id = notice id, so a duplicate is a no-op; a later interruption episode of
 * the same instance is stored as `<id>~<n>`, see src/notice-episodes.ts) → 200.
 * A 2xx is only ever sent after Redis has stored every notice of the delivery; when Redis cannot, the answer is
 * 503 with Retry-After and the bridge retries (the webhook keeps no spool of its own).
 */
export class WebhookServer {
  readonly metrics: WebhookMetrics;
  private readonly sources: Map<SourceName, EventSource>;
  private readonly buckets = new Map<SourceName, TokenBucket>();
  private server: Server | undefined;
  private readonly now: () => number;

  constructor(private readonly options: WebhookServerOptions) {
    const { config } = options;
    this.metrics = options.metrics ?? new WebhookMetrics();
    this.now = options.now ?? Date.now;
    const jwksCacheMs = config.jwksCacheSeconds * 1000;
    const onJwksFetch = (kind: string) => (result: 'ok' | 'error') => this.metrics.keyFetchesTotal.inc({ kind, result });
    const list: EventSource[] = [
      eventBridgeSource({ secret: config.eventbridgeSecret, header: config.eventbridgeHeader }),
      snsSource({
        topicArns: config.snsTopicArns,
        maxAgeMs: config.snsMaxAgeSeconds * 1000,
        https: options.snsHttps ?? (config.snsCaFile ? { ca: readFileSync(config.snsCaFile) } : undefined),
        onCertificateFetch: onJwksFetch('sns_certificate'),
        now: this.now,
      }),
      pubsubSource({
        audience: config.pubsubAudience,
        serviceAccount: config.pubsubServiceAccount,
        jwksUrl: config.pubsubJwksUrl,
        jwksCacheMs,
        onJwksFetch: onJwksFetch('google_jwks'),
        now: this.now,
      }),
      eventGridSource({
        key: config.eventgridKey,
        tenantId: config.eventgridTenantId,
        audience: config.eventgridAudience,
        clientId: config.eventgridClientId,
        jwksUrl: config.eventgridJwksUrl,
        jwksCacheMs,
        allowedOrigins: config.eventgridAllowedOrigins,
        allowedRate: config.rateLimit,
        onJwksFetch: onJwksFetch('entra_jwks'),
        now: this.now,
      }),
    ];
    this.sources = new Map(list.map((s) => [s.name, s]));
    for (const name of SOURCE_NAMES) this.buckets.set(name, new TokenBucket(config.rateLimit, config.rateBurst));
  }

  /** The configured sources (their routes answer; the others 404). */
  enabledSources(): SourceName[] {
    return [...this.sources.values()].filter((s) => s.enabled).map((s) => s.name);
  }

  async start(): Promise<void> {
    const { config } = this.options;
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.route(req, res).catch((err: unknown) => {
        this.options.logger.error({ err: describeError(err) }, 'webhook request failed');
        if (!res.headersSent) send(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    };
    this.server = config.tlsCert && config.tlsKey ? createHttpsServer({ cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) }, handler) : createHttpServer(handler);
    // Slow or stalled senders cannot hold connections: a whole request must arrive within 30 s.
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    // Longer than the usual load balancer idle timeout (60 s), so the balancer closes first.
    this.server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(config.port, config.host, () => resolve());
    });
    this.options.logger.info({ host: config.host, port: this.port, tls: !!config.tlsCert, sources: this.enabledSources() }, 'webhook listening');
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  get url(): string {
    const host = this.options.config.host === '0.0.0.0' || this.options.config.host === '::' ? '127.0.0.1' : this.options.config.host;
    return `${this.options.config.tlsCert ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
      // Deliveries in flight get a moment to finish storing their notices; then the rest is cut.
      setTimeout(() => server.closeAllConnections(), 2000).unref();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://webhook');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (path === '/healthz' || path === '/readyz' || path === '/metrics') return this.ops(path, method, res);
    if (!path.startsWith(PREFIX)) return send(res, 404, { error: `not found: POST ${PREFIX}{${SOURCE_NAMES.join(',')}}, /healthz, /readyz, /metrics` });
    const name = path.slice(PREFIX.length) as SourceName;
    const source = this.sources.get(name);
    if (!source) return send(res, 404, { error: `unknown source "${name.slice(0, 40)}" (one of ${SOURCE_NAMES.join(', ')})` });

    const started = performance.now();
    const finish = (status: number) => {
      this.metrics.requestsTotal.inc({ source: name, status: String(status) });
      this.metrics.requestDurationSeconds.observe({ source: name }, (performance.now() - started) / 1000);
    };
    const reject = (rejection: WebhookRejection, bodyRead: boolean) => {
      this.metrics.rejectedTotal.inc({ source: name, reason: rejection.reason });
      const level = rejection.reason === 'rate_limited' ? 'debug' : rejection.status >= 500 ? 'error' : 'warn';
      this.options.logger[level]({ source: name, status: rejection.status, reason: rejection.reason, remote: req.socket.remoteAddress }, `delivery refused: ${rejection.message}`);
      // An unread body is not drained: the connection closes after the answer.
      send(res, rejection.status, { error: rejection.message }, { ...rejection.headers, ...(bodyRead ? {} : { connection: 'close' }) });
      finish(rejection.status);
    };

    if (!source.enabled) return reject(new WebhookRejection(404, 'not_configured', `source ${name} is not configured on this webhook`), false);
    if (!source.methods.includes(method)) {
      return reject(new WebhookRejection(405, 'method_not_allowed', `${method} is not allowed here (${source.methods.join(', ')})`, { allow: source.methods.join(', ') }), false);
    }
    const wait = this.buckets.get(name)!.take();
    if (wait > 0) return reject(new WebhookRejection(429, 'rate_limited', `more than ${this.options.config.rateLimit} requests per second for ${name}`, { 'retry-after': String(Math.max(1, Math.ceil(wait))) }), false);

    let bodyRead = false;
    const delivery: Delivery = {
      method,
      headers: req.headers,
      query: url.searchParams,
      now: new Date(this.now()),
      readJson: async () => {
        const body = await readBody(req, this.options.config.maxBodyBytes);
        bodyRead = true;
        return strictJson(req.headers, body);
      },
    };
    let result: SourceResult;
    try {
      result = await source.handle(delivery);
    } catch (err) {
      if (err instanceof WebhookRejection) return reject(err, bodyRead);
      throw err;
    }
    if (result.type === 'reply') {
      if (result.handshake) this.metrics.handshakesTotal.inc({ source: name, kind: result.handshake });
      this.options.logger.info({ source: name, status: result.status, handshake: result.handshake }, 'handshake answered');
      send(res, result.status, result.body, result.headers);
      return finish(result.status);
    }
    if (result.notices.length === 0) {
      this.metrics.ignoredTotal.inc({ source: name });
      this.options.logger.info({ source: name, ...result.detail }, `delivery acknowledged and ignored: ${result.ignored ?? 'no notice'}`);
      send(res, 200, { status: 'ignored', reason: result.ignored ?? 'no notice' });
      return finish(200);
    }
    let outcomes: StoredNotice[];
    try {
      outcomes = await this.store(result.notices);
    } catch (err) {
      const message = err instanceof SpotwatchError && err.code === 'REDIS_UNAVAILABLE' ? `notices could not be stored: ${err.message.replace(/; the notice is kept in the spool$/, '')}` : `notices could not be stored: ${describeError(err)}`;
      return reject(new WebhookRejection(503, 'store_unavailable', message, { 'retry-after': '5' }), true);
    }
    // `id` is the id the notice is stored under (`<id>~<n>` for a later interruption episode of the instance).
    const notices = result.notices.map((n, i) => ({ id: outcomes[i]!.id, kind: n.kind, instanceId: n.instanceId, result: outcomes[i]!.outcome }));
    this.options.logger.info({ source: name, notices, ...result.detail }, 'delivery stored');
    send(res, 200, { status: 'stored', notices });
    finish(200);
    if (this.options.locator) this.locate(result.notices.filter((_, i) => outcomes[i]!.outcome === 'created'));
  }

  /** Stores every notice (in parallel); resolves only when Redis has all of them. */
  private async store(notices: Notice[]): Promise<StoredNotice[]> {
    const deadline = performance.now() + this.options.config.enqueueTimeoutMs;
    const settled = await Promise.allSettled(
      notices.map(async (notice) => {
        const stored = await this.enqueueWithin(notice, deadline);
        const outcome = stored.outcome;
        this.metrics.enqueueTotal.inc({ result: outcome });
        if (stored.newEpisode) {
          this.metrics.noticeEpisodesTotal.inc({ provider: notice.provider });
          this.options.logger.warn(
            { noticeId: notice.id, storedAs: stored.id, episode: stored.episode, instanceId: notice.instanceId, deadline: notice.deadline },
            'new interruption episode: the instance was interrupted again after an earlier interruption with the same notice id',
          );
        }
        if (outcome === 'created') {
          this.metrics.noticesTotal.inc({ provider: notice.provider, kind: notice.kind, source: notice.source });
          this.metrics.detectionToEnqueueSeconds.observe(Math.max(0, this.now() - Date.parse(notice.detectedAt)) / 1000);
        }
        return stored;
      }),
    );
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      this.metrics.enqueueTotal.inc({ result: 'failed' }, settled.filter((s) => s.status === 'rejected').length);
      throw failed.reason;
    }
    return settled.map((s) => (s as PromiseFulfilledResult<StoredNotice>).value);
  }

  /**
   * One enqueue, retried while Redis is (re)connecting, until `deadline`: a reconnect of a few hundred
   * milliseconds should not bounce deliveries. Past the deadline the last error stands (→ 503).
   */
  private async enqueueWithin(notice: Notice, deadline: number): Promise<StoredNotice> {
    for (;;) {
      try {
        return await this.options.queue.store(notice);
      } catch (err) {
        const retryable = err instanceof SpotwatchError && err.code === 'REDIS_UNAVAILABLE';
        if (!retryable || performance.now() + ENQUEUE_RETRY_MS >= deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, ENQUEUE_RETRY_MS));
      }
    }
  }

  private locate(notices: Notice[]): void {
    for (const notice of notices) {
      this.options
        .locator!.locate(notice.provider, notice.instanceId)
        .then((node) => this.options.logger.info({ noticeId: notice.id, provider: notice.provider, instanceId: notice.instanceId, node: node ?? null }, node ? 'notice instance located' : 'notice instance not found'))
        .catch((err: unknown) => this.options.logger.warn({ noticeId: notice.id, err: describeError(err) }, 'instance lookup failed'));
    }
  }

  private ops(path: string, method: string, res: ServerResponse): void {
    if (method !== 'GET' && method !== 'HEAD') return send(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });
    if (path === '/healthz') return send(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      void this.options.queue.ping().then((redis) => {
        const checks = { redis: redis ? { ok: true } : { ok: false, detail: 'Redis does not answer: deliveries are answered 503' }, sources: { ok: this.enabledSources().length > 0, detail: this.enabledSources().join(', ') } };
        const ready = redis && checks.sources.ok;
        send(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', checks });
      });
      return;
    }
    this.metrics.registry
      .metrics()
      .then((text) => {
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType, 'cache-control': 'no-store' });
        res.end(text);
      })
      .catch((err: unknown) => send(res, 500, { error: describeError(err) }));
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? '' : `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'cache-control': 'no-store', ...(text ? { 'content-type': 'application/json' } : {}), 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export type { RejectReason };
