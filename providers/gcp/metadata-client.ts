import type { Metrics } from '../../src/metrics.js';
import { MetadataError, MetadataRequestAborted, statusReason, transportReason } from '../../src/metadata-error.js';
import { HttpRequestError, request, type HttpResponse } from '../../src/util/http-request.js';

/**
 * HTTP client for the GCE metadata server (`/computeMetadata/v1/`): the `Metadata-Flavor: Google` header on
 * every request, the same header checked on every answer, ETags, hanging GETs (`wait_for_change`), a hard
 * per-request timeout, and failures classified the way `spotwatch_metadata_errors_total` counts them.
 */
export const GCP_METADATA_PREFIX = '/computeMetadata/v1/';

/** A metadata request that produced no usable answer. Never to be read as "no notice". */
export class GcpMetadataError extends MetadataError {
  override readonly name = 'GcpMetadataError';

  /** Worth retrying: the server may answer later (timeouts, 5xx, 429, refused or dropped connections). */
  get retryable(): boolean {
    return this.reason !== 'other' && this.reason !== 'http_401';
  }
}

export interface GcpValue {
  /** The body exactly as served (leaf values have no trailing newline). */
  value: string;
  /** The ETag header; absent only from a server that does not do ETags. */
  etag: string | undefined;
}

export interface GcpMetadataClientOptions {
  /** Base URL: `http://169.254.169.254`, `http://metadata.google.internal`, or an emulator's URL. */
  endpoint: string;
  /** Timeout of a plain GET; a hanging GET gets `timeout_sec` on top of it. */
  requestTimeoutMs: number;
  metrics?: Metrics | undefined;
}

export interface GetOptions {
  signal?: AbortSignal | undefined;
  /** Overrides the client's request timeout for this request. */
  timeoutMs?: number | undefined;
}

/** `instance/upcoming-maintenance?alt=json`, when one is announced. */
export interface GcpUpcomingMaintenance {
  type: string | undefined;
  maintenanceStatus: string | undefined;
  windowStart: Date | undefined;
  windowEnd: Date | undefined;
  latestWindowStart: Date | undefined;
  canReschedule: boolean | undefined;
}

export class GcpMetadataClient {
  readonly base: string;

  constructor(private readonly options: GcpMetadataClientOptions) {
    this.base = options.endpoint.replace(/\/+$/, '');
  }

  /** Plain GET of `path` (relative to `/computeMetadata/v1/`). 200 only; anything else throws. */
  get(path: string, options: GetOptions = {}): Promise<GcpValue> {
    return this.send(path, path, options.timeoutMs ?? this.options.requestTimeoutMs, options.signal);
  }

  /**
   * Hanging GET: the server answers as soon as the value's ETag differs from `lastEtag` (at once when it
   * already does), or after `timeoutSec` with the unchanged value. Without `lastEtag` (or with an empty one)
   * it waits for the next change. The HTTP timeout is `timeoutSec` plus the client's request timeout.
   */
  waitForChange(path: string, lastEtag: string | undefined, timeoutSec: number, options: GetOptions = {}): Promise<GcpValue> {
    const query = new URLSearchParams({ wait_for_change: 'true' });
    if (lastEtag !== undefined && lastEtag !== '') query.set('last_etag', lastEtag);
    query.set('timeout_sec', String(timeoutSec));
    return this.send(path, `${path}?${query.toString()}`, timeoutSec * 1000 + (options.timeoutMs ?? this.options.requestTimeoutMs), options.signal);
  }

  /**
   * `instance/upcoming-maintenance?alt=json`. "Nothing scheduled" comes in several shapes — `{}`, `NONE`, a
   * 404, or `{"error": "no notifications have been received yet…"}` — and all of them give `undefined`.
   */
  async upcomingMaintenance(options: GetOptions = {}): Promise<GcpUpcomingMaintenance | undefined> {
    const path = 'instance/upcoming-maintenance';
    let answer: HttpResponse;
    try {
      answer = await this.raw(path, `${path}?alt=json`, options.timeoutMs ?? this.options.requestTimeoutMs, options.signal);
    } catch (err) {
      throw this.transportError(path, err);
    }
    const text = answer.body.trim();
    if (answer.status === 404 || text === '' || text.toUpperCase() === 'NONE' || /no notifications/i.test(text)) {
      this.succeeded();
      return undefined;
    }
    this.check(path, answer);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw this.fail(new GcpMetadataError('other', `GCE metadata ${path}: not JSON (${(err as Error).message})`, answer.status));
    }
    this.succeeded();
    if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
    const o = json as Record<string, unknown>;
    if (Object.keys(o).length === 0 || 'error' in o) return undefined;
    const str = (key: string) => (typeof o[key] === 'string' && o[key] !== '' ? (o[key] as string) : undefined);
    const time = (key: string) => {
      const s = str(key);
      const d = s === undefined ? undefined : new Date(s);
      return d && !Number.isNaN(d.getTime()) ? d : undefined;
    };
    const can = o.can_reschedule;
    return {
      type: str('type'),
      maintenanceStatus: str('maintenance_status'),
      windowStart: time('window_start_time'),
      windowEnd: time('window_end_time'),
      latestWindowStart: time('latest_window_start_time'),
      canReschedule: can === true || can === 'true' || can === 'TRUE' ? true : can === false || can === 'false' || can === 'FALSE' ? false : undefined,
    };
  }

  private async send(path: string, pathAndQuery: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<GcpValue> {
    let answer: HttpResponse;
    try {
      answer = await this.raw(path, pathAndQuery, timeoutMs, signal);
    } catch (err) {
      throw this.transportError(path, err);
    }
    this.check(path, answer);
    this.succeeded();
    const etag = answer.headers.etag;
    return { value: answer.body, etag: typeof etag === 'string' && etag !== '' ? etag : undefined };
  }

  private raw(path: string, pathAndQuery: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<HttpResponse> {
    if (signal?.aborted) return Promise.reject(new MetadataRequestAborted('GCE metadata', path));
    this.options.metrics?.metadataRequestsTotal.inc({ provider: 'gcp', path });
    return request(`${this.base}${GCP_METADATA_PREFIX}${pathAndQuery}`, { headers: { 'Metadata-Flavor': 'Google' }, timeoutMs, signal, maxBytes: 256 * 1024 });
  }

  /** Throws for anything but a 200 from a real GCE metadata server. */
  private check(path: string, answer: HttpResponse): void {
    if (answer.status !== 200) throw this.fail(statusError(path, answer.status));
    if (answer.headers['metadata-flavor'] !== 'Google') {
      throw this.fail(
        new GcpMetadataError('other', `GCE metadata ${path}: the answer lacks "Metadata-Flavor: Google" — not the GCE metadata server, or a proxy is in between`, answer.status),
      );
    }
  }

  private transportError(path: string, err: unknown): Error {
    if (err instanceof GcpMetadataError || err instanceof MetadataRequestAborted) return err;
    if (err instanceof HttpRequestError && err.reason === 'aborted') return new MetadataRequestAborted('GCE metadata', path);
    return this.fail(new GcpMetadataError(transportReason(err), `GCE metadata ${path}: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err }));
  }

  private fail(err: GcpMetadataError): GcpMetadataError {
    this.options.metrics?.metadataErrorsTotal.inc({ provider: 'gcp', reason: err.reason });
    return err;
  }

  private succeeded(): void {
    this.options.metrics?.metadataLastSuccess.set({ provider: 'gcp' }, Date.now() / 1000);
  }
}

function statusError(path: string, status: number): GcpMetadataError {
  const hint =
    status === 403
      ? 'refused: the request lacked "Metadata-Flavor: Google" or carried X-Forwarded-For (a proxy)'
      : status === 404
        ? 'no such metadata key'
        : status === 503
          ? 'the metadata server is temporarily unavailable; retrying'
          : status === 429
            ? 'throttled; backing off'
            : 'the metadata server answered with an error';
  return new GcpMetadataError(statusReason(status), `GCE metadata ${path}: HTTP ${status} (${hint})`, status);
}
