/**
 * Typed errors. Every error spotwatch raises on purpose carries a stable `code` (for logs, metrics and
 * scripts), a message that says what failed and what to do, and the underlying `cause` when there is one.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'PAYLOAD_MALFORMED'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNKNOWN_SOURCE'
  | 'METADATA_UNAVAILABLE'
  | 'METADATA_UNAUTHORIZED'
  | 'METADATA_TIMEOUT'
  | 'NO_CLOUD_DETECTED'
  | 'REDIS_UNAVAILABLE'
  | 'REDIS_BINARY_MISSING'
  | 'REGISTRY_REPLY_INVALID'
  | 'SPOOL_CORRUPT'
  | 'USAGE';

export class SpotwatchError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpotwatchError';
    this.code = code;
  }
}

/** A payload that cannot be a valid notice source document. The message names the offending field. */
export class PayloadError extends SpotwatchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PAYLOAD_MALFORMED', message, options);
    this.name = 'PayloadError';
  }
}

/** Short, single-line description of any thrown value, for logs and CLI output. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && code.length > 0 ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
