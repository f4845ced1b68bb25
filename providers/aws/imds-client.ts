import { MetadataError, statusReason, transportReason } from '../../src/metadata-error.js';
import type { Metrics } from '../../src/metrics.js';
import { HttpRequestError, request, type HttpResponse } from '../../src/util/http-request.js';

/** Token lifetime we ask for (the IMDS maximum is 21600 s). */
export const DEFAULT_TOKEN_TTL_SECONDS = 21_600;
/** Renew the token this long before it expires, so a request never races its expiry. */
const TOKEN_RENEW_MARGIN_MS = 60_000;

export interface ImdsClientOptions {
  endpoint: string;
  requestTimeoutMs: number;
  /** Fall back to IMDSv1 (no token) when the token endpoint is not available. */
  imdsV1: boolean;
  tokenTtlSeconds?: number;
  metrics: Metrics;
}

/** The result of a metadata GET: the body for 200, `undefined` for 404 (the path has nothing). */
export interface ImdsAnswer {
  status: 200 | 404;
  body: string;
}

/**
 * IMDSv2 client: PUT /latest/api/token once, reuse the token until shortly before it expires, renew on 401.
 * With `imdsV1`, a token endpoint that refuses (403/404/405) or is unreachable falls back to plain GETs.
 */
export class ImdsClient {
  private token: { value: string; expiresAt: number } | undefined;
  private tokenRequest: Promise<string | undefined> | undefined;
  private readonly base: string;
  private readonly ttlSeconds: number;

  constructor(private readonly options: ImdsClientOptions) {
    this.base = options.endpoint.replace(/\/+$/, '');
    this.ttlSeconds = options.tokenTtlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
  }

  /** GET `/latest/meta-data/<path>`; 200 and 404 are answers, everything else throws MetadataError. */
  async get(path: string, signal?: AbortSignal): Promise<ImdsAnswer> {
    this.options.metrics.metadataRequestsTotal.inc({ provider: 'aws', path });
    let response = await this.send(path, await this.currentToken(signal), signal);
    if (response.status === 401) {
      // The token expired or was revoked (e.g. the IMDS restarted): get a new one and try once more.
      this.token = undefined;
      response = await this.send(path, await this.currentToken(signal), signal);
    }
    if (response.status === 200 || response.status === 404) return { status: response.status, body: response.body };
    throw this.statusError(path, response.status);
  }

  private async send(path: string, token: string | undefined, signal?: AbortSignal): Promise<HttpResponse> {
    const headers: Record<string, string> = {};
    if (token) headers['X-aws-ec2-metadata-token'] = token;
    try {
      return await request(`${this.base}/latest/meta-data/${path}`, { headers, timeoutMs: this.options.requestTimeoutMs, signal });
    } catch (err) {
      throw this.transportError(path, err);
    }
  }

  private async currentToken(signal?: AbortSignal): Promise<string | undefined> {
    if (this.token && Date.now() < this.token.expiresAt - TOKEN_RENEW_MARGIN_MS) return this.token.value;
    // One token request at a time, shared by the parallel path polls.
    this.tokenRequest ??= this.fetchToken(signal).finally(() => {
      this.tokenRequest = undefined;
    });
    return this.tokenRequest;
  }

  private async fetchToken(signal?: AbortSignal): Promise<string | undefined> {
    this.options.metrics.metadataRequestsTotal.inc({ provider: 'aws', path: 'api/token' });
    let response: HttpResponse;
    try {
      response = await request(`${this.base}/latest/api/token`, {
        method: 'PUT',
        headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(this.ttlSeconds) },
        timeoutMs: this.options.requestTimeoutMs,
        signal,
      });
    } catch (err) {
      if (this.options.imdsV1 && err instanceof HttpRequestError && err.reason === 'connection') return undefined;
      throw this.transportError('api/token', err);
    }
    if (response.status === 200 && response.body.trim() !== '') {
      this.token = { value: response.body.trim(), expiresAt: Date.now() + this.ttlSeconds * 1000 };
      return this.token.value;
    }
    if (this.options.imdsV1 && [403, 404, 405].includes(response.status)) return undefined;
    throw this.statusError('api/token', response.status);
  }

  private statusError(path: string, status: number): MetadataError {
    const hint =
      status === 401
        ? 'the IMDSv2 token was refused even after renewal'
        : status === 403
          ? 'IMDS access is disabled for this instance or the request came through a proxy (X-Forwarded-For)'
          : status === 429
            ? 'IMDS is throttling; spotwatch backs off'
            : 'IMDS answered with an error';
    return new MetadataError(status === 403 ? 'http_403' : statusReason(status), `IMDS ${path}: HTTP ${status} (${hint})`);
  }

  private transportError(path: string, err: unknown): MetadataError {
    return new MetadataError(transportReason(err), `IMDS ${path}: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
  }
}
