import { SpotwatchError } from '../../src/errors.js';
import { MetadataError, MetadataRequestAborted, statusReason, transportReason } from '../../src/metadata-error.js';
import type { Metrics } from '../../src/metrics.js';
import { HttpRequestError, request, type HttpResponse } from '../../src/util/http-request.js';

/**
 * HTTP client for Azure IMDS: `Metadata: true` on every request, an explicit api-version, a hard per-request
 * timeout (the caller picks it: the very first Scheduled Events call may take two minutes), and failures
 * classified the way `spotwatch_metadata_errors_total` counts them.
 */
export const AZURE_SCHEDULED_EVENTS_PATH = '/metadata/scheduledevents';
export const AZURE_SCHEDULED_EVENTS_API_VERSION = '2020-07-01';
export const AZURE_COMPUTE_PATH = '/metadata/instance/compute';
export const AZURE_COMPUTE_API_VERSION = '2021-02-01';

/** An IMDS request that produced no usable answer. Never to be read as "no notice". */
export class AzureMetadataError extends MetadataError {
  override readonly name = 'AzureMetadataError';

  /** Worth retrying: timeouts, 5xx, 429, 410 (IMDS: "retry after a while"), refused or dropped connections. */
  get retryable(): boolean {
    return this.reason !== 'other' || this.status === 410;
  }
}

export interface AzureMetadataClientOptions {
  /** Base URL: `http://169.254.169.254` or an emulator's URL. */
  endpoint: string;
  requestTimeoutMs: number;
  metrics?: Metrics | undefined;
}

export interface AzureRequestOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

export class AzureMetadataClient {
  readonly base: string;

  constructor(private readonly options: AzureMetadataClientOptions) {
    this.base = options.endpoint.replace(/\/+$/, '');
  }

  /** GET the Scheduled Events document (raw JSON text). */
  async scheduledEvents(options: AzureRequestOptions = {}): Promise<string> {
    const answer = await this.send('GET', AZURE_SCHEDULED_EVENTS_PATH, AZURE_SCHEDULED_EVENTS_API_VERSION, undefined, options);
    return answer.body;
  }

  /** GET `/metadata/instance/compute` as a JSON object. */
  async compute(options: AzureRequestOptions = {}): Promise<Record<string, unknown>> {
    const answer = await this.send('GET', AZURE_COMPUTE_PATH, AZURE_COMPUTE_API_VERSION, undefined, options);
    let json: unknown;
    try {
      json = JSON.parse(answer.body);
    } catch (err) {
      throw this.fail(new AzureMetadataError('other', `Azure IMDS ${AZURE_COMPUTE_PATH}: not JSON (${(err as Error).message})`, answer.status));
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw this.fail(new AzureMetadataError('other', `Azure IMDS ${AZURE_COMPUTE_PATH}: expected a JSON object`, answer.status));
    }
    return json as Record<string, unknown>;
  }

  /**
   * Approves (starts) scheduled events: `POST {"StartRequests":[{"EventId":…}]}`. Azure may then start the
   * event before its NotBefore — for every VM in its Resources, so call it only once every task is safe.
   */
  async approve(eventIds: readonly string[], options: AzureRequestOptions = {}): Promise<void> {
    const body = JSON.stringify({ StartRequests: eventIds.map((EventId) => ({ EventId })) });
    await this.send('POST', AZURE_SCHEDULED_EVENTS_PATH, AZURE_SCHEDULED_EVENTS_API_VERSION, body, options);
  }

  private async send(method: 'GET' | 'POST', path: string, apiVersion: string, body: string | undefined, options: AzureRequestOptions): Promise<HttpResponse> {
    if (options.signal?.aborted) throw new MetadataRequestAborted('Azure IMDS', path);
    const label = path.replace('/metadata/', '') + (method === 'POST' ? ':approve' : '');
    this.options.metrics?.metadataRequestsTotal.inc({ provider: 'azure', path: label });
    const headers: Record<string, string> = { Metadata: 'true' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let answer: HttpResponse;
    try {
      answer = await request(`${this.base}${path}?api-version=${apiVersion}`, {
        method,
        headers,
        body,
        timeoutMs: options.timeoutMs ?? this.options.requestTimeoutMs,
        signal: options.signal,
        maxBytes: 1024 * 1024,
      });
    } catch (err) {
      if (err instanceof HttpRequestError && err.reason === 'aborted') throw new MetadataRequestAborted('Azure IMDS', path);
      throw this.fail(new AzureMetadataError(transportReason(err), `Azure IMDS ${path}: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err }));
    }
    if (answer.status < 200 || answer.status > 299) throw this.fail(statusError(path, answer));
    this.options.metrics?.metadataLastSuccess.set({ provider: 'azure' }, Date.now() / 1000);
    return answer;
  }

  private fail(err: AzureMetadataError): AzureMetadataError {
    this.options.metrics?.metadataErrorsTotal.inc({ provider: 'azure', reason: err.reason });
    return err;
  }
}

function statusError(path: string, answer: HttpResponse): AzureMetadataError {
  const status = answer.status;
  let detail = '';
  try {
    const json = JSON.parse(answer.body) as { error?: unknown };
    if (typeof json.error === 'string') detail = `: ${json.error.slice(0, 200)}`;
  } catch {
    // not JSON: no detail
  }
  const hint =
    status === 400
      ? ' (IMDS refused the request: missing "Metadata: true" header or api-version)'
      : status === 410
        ? ' (IMDS is not ready yet; retrying)'
        : status === 429
          ? ' (IMDS allows about 5 requests per second; backing off)'
          : '';
  return new AzureMetadataError(statusReason(status), `Azure IMDS ${path}: HTTP ${status}${detail}${hint}`, status);
}

export interface ApproveOptions {
  /** Default 5000 ms. */
  timeoutMs?: number | undefined;
  metrics?: Metrics | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Approves one scheduled event through IMDS (`POST /metadata/scheduledevents` with
 * `{"StartRequests":[{"EventId": eventId}]}`), letting Azure start it before its NotBefore.
 *
 * Call it ONLY after every task on the node is safe (checkpointed and restored elsewhere, or deliberately
 * let go): the migration worker calls it as the last step of draining an Azure node. Approving starts the
 * event for every VM in its Resources, not just this one. Never called by the watcher itself.
 * Throws AzureMetadataError when IMDS does not accept the request.
 */
export async function approveScheduledEvent(endpoint: string, eventId: string, options: ApproveOptions = {}): Promise<void> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(eventId)) {
    throw new SpotwatchError('USAGE', `approveScheduledEvent: "${eventId.slice(0, 60)}" is not a scheduled event id`);
  }
  const client = new AzureMetadataClient({ endpoint, requestTimeoutMs: options.timeoutMs ?? 5_000, metrics: options.metrics });
  await client.approve([eventId], { signal: options.signal });
}
