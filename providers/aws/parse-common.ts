import { PayloadError } from '../../src/errors.js';
import { makeNotice, type Notice, type NoticeAction, type NoticeKind, type NoticeSource } from '../../src/notice.js';
import { asDate, asNonEmptyString, parseJson, truncate } from '../../src/payload.js';
import type { ParseContext } from '../../src/provider.js';

/**
 * Helpers shared by the AWS parsers (IMDS documents and EventBridge events).
 */

/** An EC2 instance id: `i-` and 8 (older) or 17 hex digits. */
const INSTANCE_ID = /^i-[0-9a-f]{8,17}$/;
/** `arn:aws:ec2:<region>:<account>:instance/<id>` (any partition; region / account may be empty). */
const INSTANCE_ARN = /^arn:aws[a-z-]*:ec2:[a-z0-9-]*:[0-9]*:instance\/(i-[0-9a-f]{8,17})$/;

/**
 * Identity of an interruption (see `noticeIdentity`): an instance is reclaimed once per episode, and the
 * sources disagree on the deadline (IMDS gives the action time, EventBridge the time it sent the warning),
 * so neither the deadline nor the source's event id may be part of the key.
 *
 * The id is therefore the same for every interruption of the instance. A terminated instance never comes back,
 * but a `stop` / `hibernate` spot instance is started again by EC2 and can be interrupted again: the notices
 * queue tells those episodes apart by deadline and stores the later ones as `<id>~<n>` (src/notice-episodes.ts).
 */
export const INTERRUPTION_IDENTITY = 'interruption-episode';
/** Identity of a rebalance recommendation: at most one per instance, whichever source reports it. */
export const REBALANCE_IDENTITY = 'rebalance';

export function isInstanceId(value: string): boolean {
  return INSTANCE_ID.test(value);
}

/** The instance id in `value` (a bare id or an EC2 instance ARN), or undefined. */
export function instanceIdIn(value: string): string | undefined {
  if (INSTANCE_ID.test(value)) return value;
  return INSTANCE_ARN.exec(value)?.[1];
}

/** Reads an EC2 instance id; the error names the field and shows (truncated) what was there. */
export function asInstanceId(value: unknown, path: string): string {
  const s = asNonEmptyString(value, path);
  if (!INSTANCE_ID.test(s)) throw new PayloadError(`${path}: "${truncate(s)}" is not an EC2 instance id (i-<hex>)`);
  return s;
}

// ISO-8601 with a zone (what IMDS spot documents and EventBridge use) …
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})$/;
// … or RFC 1123 style, with or without the weekday (`21 Jan 2019 09:00:43 GMT`, `Fri, 27 Jan 2023 01:43:21 GMT`).
const HTTP_TIME =
  /^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} (?:GMT|UTC|[+-]\d{4})$/;

/**
 * A timestamp in one of the formats AWS documents. Stricter than `asDate`: JavaScript's Date accepts
 * strings such as "1" or "May 5" (local time), which are not times any AWS source sends.
 */
export function asAwsTime(value: unknown, path: string): Date {
  const s = asNonEmptyString(value, path);
  if (!ISO_TIME.test(s) && !HTTP_TIME.test(s)) {
    throw new PayloadError(`${path}: "${truncate(s)}" is not a valid time (expected ISO-8601 or e.g. "21 Jan 2019 09:00:43 GMT")`);
  }
  return asDate(s, path);
}

export function optionalAwsTime(value: unknown, path: string): Date | undefined {
  return value === undefined || value === null ? undefined : asAwsTime(value, path);
}

/**
 * IMDS answers a path that has no item yet (no interruption scheduled, no recommendation) with 404 and a
 * small HTML page ("404 - Not Found"); some clients pass the status line or "Not Found" text on instead.
 */
export function isNotFoundPage(text: string): boolean {
  const t = text.trim();
  if (t === '' || t.length > 4096) return false;
  if (/^(?:(?:HTTP\/\d(?:\.\d)? )?404\b[\s:-]*)?not found\.?$/i.test(t)) return true;
  return t.startsWith('<') && /\b404\b/.test(t) && /not found/i.test(t);
}

/**
 * Parses an IMDS JSON document. An HTML page that is not the 404 page (a 401 from a missing IMDSv2 token,
 * a proxy's error page) is malformed input, never "no notice".
 */
export function parseImdsJson(text: string, what: string): unknown {
  const t = text.trimStart();
  if (t.startsWith('<')) {
    throw new PayloadError(`${what}: got an HTML page (${describeHtml(t)}), not the JSON document`);
  }
  return parseJson(text, what);
}

function describeHtml(html: string): string {
  const title = /<title>([^<]{0,200})<\/title>/i.exec(html)?.[1]?.trim();
  return title ? `"${truncate(title)}"` : 'no title';
}

/** `ctx.instanceId`, required for IMDS documents (they never name the instance). */
export function contextInstanceId(ctx: ParseContext, source: string): string {
  const id = ctx.instanceId?.trim();
  if (!id) throw new PayloadError(`--instance-id is required for ${source}`);
  return id;
}

export interface AwsNoticeFacts {
  kind: NoticeKind;
  action: NoticeAction;
  instanceId: string;
  source: NoticeSource;
  deadline?: Date | undefined;
  eventId?: string | undefined;
  identity: string;
}

/** Every AWS notice goes through here: provider `aws`, detectedAt = ctx.now, id from `makeNotice`. */
export function awsNotice(facts: AwsNoticeFacts, ctx: ParseContext): Notice {
  return makeNotice({ provider: 'aws', detectedAt: ctx.now, ...facts });
}
