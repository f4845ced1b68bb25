import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

/** Why a delivery was refused; the label of `spotwatch_webhook_rejected_total`. */
export type RejectReason =
  | 'unauthenticated'
  | 'forbidden'
  | 'malformed'
  | 'too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'stale'
  | 'store_unavailable'
  | 'not_configured'
  | 'method_not_allowed'
  | 'upstream_failed';

/**
 * A delivery refused with a definite HTTP status. The message goes into the JSON answer and the log line;
 * it never contains a secret or the token itself.
 */
export class WebhookRejection extends Error {
  constructor(
    readonly status: number,
    readonly reason: RejectReason,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'WebhookRejection';
  }
}

export const unauthenticated = (message: string, headers: Record<string, string> = {}) => new WebhookRejection(401, 'unauthenticated', message, headers);
export const forbidden = (message: string) => new WebhookRejection(403, 'forbidden', message);
export const malformed = (message: string) => new WebhookRejection(400, 'malformed', message);

/** The value of a header that must appear at most once. Repeated → malformed (no guessing which one counts). */
export function singleHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  if (Array.isArray(value)) {
    if (value.length > 1) throw malformed(`header ${name} given ${value.length} times`);
    return value[0];
  }
  return value;
}

/**
 * Reads the whole body, refusing more than `limit` bytes: a Content-Length above it is refused before any
 * byte is read, a chunked body as soon as it passes the limit.
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined) {
    if (!/^\d+$/.test(declared)) throw malformed('Content-Length is not a number');
    if (Number(declared) > limit) throw new WebhookRejection(413, 'too_large', `body of ${declared} bytes is larger than the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      const buf = chunk as Buffer;
      size += buf.length;
      if (size > limit) throw new WebhookRejection(413, 'too_large', `body is larger than the ${limit}-byte limit`);
      chunks.push(buf);
    }
  } catch (err) {
    if (err instanceof WebhookRejection) throw err;
    // The sender went away mid-body (aborted, reset): nothing to store, nobody to answer.
    throw malformed(`request body was cut off (${err instanceof Error ? err.message : String(err)})`);
  }
  return Buffer.concat(chunks);
}

const JSON_TYPES = /^(?:application\/(?:[\w.+-]+\+)?json|text\/plain)$/i;

/**
 * Checks the Content-Type (absent, JSON of any flavour — `application/cloudevents+json`, … — or text/plain,
 * which SNS uses; the charset, if given, must be UTF-8) and decodes the body strictly: valid UTF-8 (no
 * replacement characters), one JSON value, nothing after it. Returns the text and the parsed value.
 */
export function strictJson(headers: IncomingHttpHeaders, body: Buffer): { text: string; value: unknown } {
  const contentType = headers['content-type'];
  if (contentType !== undefined && contentType.trim() !== '') {
    const [type = '', ...params] = contentType.split(';').map((s) => s.trim());
    if (!JSON_TYPES.test(type)) throw new WebhookRejection(415, 'unsupported_media_type', `Content-Type ${type} is not JSON`);
    const charset = params.find((p) => p.toLowerCase().startsWith('charset='));
    if (charset && !/^charset="?utf-8"?$/i.test(charset)) throw new WebhookRejection(415, 'unsupported_media_type', `${charset} is not UTF-8`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(body);
  } catch {
    throw malformed('body is not valid UTF-8');
  }
  if (text.trim() === '') throw malformed('empty body, expected JSON');
  try {
    return { text, value: JSON.parse(text) as unknown };
  } catch (err) {
    throw malformed(`body is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
}

/**
 * Constant-time comparison of a presented secret with the expected one. Both are hashed first, so neither the
 * content nor the length of the expected secret leaks through timing.
 */
export function secretsEqual(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** A token bucket: `rate` tokens per second, at most `burst` stored. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = this.now();
  }

  /** Takes one token; returns 0 when allowed, else the seconds until one is available. */
  take(): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return (1 - this.tokens) / this.rate;
  }
}
