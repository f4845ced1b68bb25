import { SpotwatchError } from './errors.js';
import { HttpRequestError } from './util/http-request.js';

/**
 * The failure classification shared by the metadata clients (AWS IMDS, the GCE metadata server, Azure IMDS):
 * `reason` is the label `spotwatch_metadata_errors_total` counts it under.
 */
export type MetadataErrorReason = 'timeout' | 'http_5xx' | 'http_429' | 'http_401' | 'http_403' | 'connection' | 'other';

/** A metadata request that produced no usable answer. Never to be read as "no notice". */
export class MetadataError extends SpotwatchError {
  constructor(
    readonly reason: MetadataErrorReason,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(reason === 'timeout' ? 'METADATA_TIMEOUT' : reason === 'http_401' ? 'METADATA_UNAUTHORIZED' : 'METADATA_UNAVAILABLE', message, options);
  }
}

/** The request was aborted by its caller (the watcher is stopping); not an error to count. */
export class MetadataRequestAborted extends Error {
  /** `service`: how messages name the metadata service, e.g. `GCE metadata`, `Azure IMDS`. */
  constructor(service: string, path: string) {
    super(`${service} ${path}: aborted`);
    this.name = 'MetadataRequestAborted';
  }
}

/** The reason for an HTTP answer that is an error: 401, 429 and 5xx have their own; anything else is `other`. */
export function statusReason(status: number): MetadataErrorReason {
  return status === 401 ? 'http_401' : status === 429 ? 'http_429' : status >= 500 ? 'http_5xx' : 'other';
}

/** The reason for a request that got no HTTP answer: timeouts and refused or dropped connections have their own. */
export function transportReason(err: unknown): MetadataErrorReason {
  if (!(err instanceof HttpRequestError)) return 'other';
  return err.reason === 'timeout' ? 'timeout' : err.reason === 'connection' ? 'connection' : 'other';
}
