import { PayloadError } from '../../src/errors.js';
import { makeNotice, type NoticeFacts, type NoticeSource } from '../../src/notice.js';
import { asNonEmptyString, asObject, optionalString, parseJson, truncate, type JsonObject } from '../../src/payload.js';
import type { ParseContext, PayloadParser } from '../../src/provider.js';

/**
 * GCP notices, from the metadata server (`instance/preempted`, `instance/maintenance-event`) and from a
 * Pub/Sub push subscription on the Cloud Audit Log (`compute.instances.preempted`). The watcher builds its
 * notices with the same functions, so a value seen live and the same value given to `spotwatch parse`
 * produce the same notice.
 */

/** Time from noticing a preemption to the VM being gone: GCE sends ACPI G2 soft-off and stops it 30 s later. */
export const GCP_PREEMPTION_DEADLINE_MS = 30_000;
/** `TERMINATE_ON_HOST_MAINTENANCE` is announced 60 s before the host maintenance stops the VM. */
export const GCP_TERMINATE_MAINTENANCE_DEADLINE_MS = 60_000;

/**
 * Identity of a preemption (see `noticeIdentity`): a VM is preempted once per episode, and the two sources
 * share nothing else — the metadata server gives no event id and the audit log's timestamp is not the time
 * the node saw `preempted=TRUE` — so the same preemption seen both ways is one notice id.
 *
 * A preemptible / Spot VM with the stop termination action can be started again and preempted again under the
 * same instance id, so this id recurs: the notices queue tells the episodes apart by deadline and stores the
 * later ones as `<id>~<n>` (src/notice-episodes.ts). Both sources' deadlines are within seconds of each other.
 */
export const GCP_PREEMPTION_IDENTITY = 'interruption-episode';

/** `instance/maintenance-event` values that announce something, and what the host will do. */
export const GCP_MAINTENANCE_ACTIONS = {
  MIGRATE_ON_HOST_MAINTENANCE: 'migrate',
  TERMINATE_ON_HOST_MAINTENANCE: 'terminate',
  /** Legacy spelling of TERMINATE_ON_HOST_MAINTENANCE. */
  SHUTDOWN_ON_HOST_MAINTENANCE: 'terminate',
} as const;
export type GcpMaintenanceValue = keyof typeof GCP_MAINTENANCE_ACTIONS;

/** The numeric GCE instance id (`instance/id`, the audit log's `resource.labels.instance_id`). */
const NUMERIC_ID = /^\d{1,20}$/;

export interface GcpDeadlines {
  preemptionMs: number;
  terminateMaintenanceMs: number;
}

export const DEFAULT_GCP_DEADLINES: GcpDeadlines = {
  preemptionMs: GCP_PREEMPTION_DEADLINE_MS,
  terminateMaintenanceMs: GCP_TERMINATE_MAINTENANCE_DEADLINE_MS,
};

/** The facts of a preemption detected at `detectedAt` (deadline = detection + the preemption window). */
export function preemptionFacts(instanceId: string, detectedAt: Date, source: NoticeSource, deadlineMs = GCP_PREEMPTION_DEADLINE_MS, eventId?: string): NoticeFacts {
  return {
    provider: 'gcp',
    kind: 'interruption',
    action: 'terminate',
    instanceId,
    deadline: new Date(detectedAt.getTime() + deadlineMs),
    detectedAt,
    source,
    eventId,
    identity: GCP_PREEMPTION_IDENTITY,
  };
}

/**
 * The facts of a maintenance-event value: TERMINATE (and legacy SHUTDOWN) → `maintenance`/`terminate` with a
 * deadline; MIGRATE → `maintenance`/`migrate`, no deadline (the VM lives on; only a pause). The identity is the
 * value itself, so each announcement is one notice and NONE cancels exactly it.
 */
export function maintenanceFacts(value: GcpMaintenanceValue, instanceId: string, detectedAt: Date, terminateDeadlineMs = GCP_TERMINATE_MAINTENANCE_DEADLINE_MS): NoticeFacts {
  const action = GCP_MAINTENANCE_ACTIONS[value];
  return {
    provider: 'gcp',
    kind: 'maintenance',
    action,
    instanceId,
    deadline: action === 'terminate' ? new Date(detectedAt.getTime() + terminateDeadlineMs) : undefined,
    detectedAt,
    source: 'imds',
    identity: value,
  };
}

/**
 * The cancellation of an earlier notice: the same facts (identity, action, deadline) with kind `cancelled`,
 * so the original's id can be recomputed from it.
 */
export function cancelledFacts(original: NoticeFacts, detectedAt: Date): NoticeFacts {
  return { ...original, kind: 'cancelled', detectedAt };
}

/** `instance/preempted`: `TRUE` or `FALSE` (surrounding whitespace tolerated). */
export function readPreempted(text: string): boolean {
  const value = text.trim();
  if (value === 'TRUE') return true;
  if (value === 'FALSE') return false;
  throw new PayloadError(`instance/preempted: expected TRUE or FALSE, got ${value === '' ? 'an empty body' : `"${truncate(value)}"`}`);
}

/**
 * `instance/maintenance-event`: `NONE`, one of the announced values, or `undefined` for a well-formed value
 * this version does not know (a future one: logged, not acted on). Anything else is malformed.
 */
export function readMaintenanceEvent(text: string): GcpMaintenanceValue | 'NONE' | undefined {
  const value = text.trim();
  if (value === 'NONE') return 'NONE';
  if (value in GCP_MAINTENANCE_ACTIONS) return value as GcpMaintenanceValue;
  if (/^[A-Z][A-Z0-9_]{0,63}$/.test(value)) return undefined;
  throw new PayloadError(
    `instance/maintenance-event: expected NONE, MIGRATE_ON_HOST_MAINTENANCE or TERMINATE_ON_HOST_MAINTENANCE, got ${value === '' ? 'an empty body' : `"${truncate(value)}"`}`,
  );
}

function requireInstanceId(ctx: ParseContext, source: string): string {
  const id = ctx.instanceId?.trim();
  if (!id) throw new PayloadError(`instanceId: a ${source} value does not name the instance; pass --instance-id (the numeric instance/id)`);
  return id;
}

const parsePreempted: PayloadParser = (payload, ctx) => {
  const preempted = readPreempted(payload);
  if (!preempted) return [];
  return [makeNotice(preemptionFacts(requireInstanceId(ctx, 'gcp-preempted'), ctx.now, 'imds'))];
};

const parseMaintenanceEvent: PayloadParser = (payload, ctx) => {
  const value = readMaintenanceEvent(payload);
  if (value === undefined || value === 'NONE') return [];
  return [makeNotice(maintenanceFacts(value, requireInstanceId(ctx, 'gcp-maintenance-event'), ctx.now))];
};

// ISO-8601 / RFC 3339 with a zone, as the audit log writes it (`2023-09-16T10:42:31.325309Z`).
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

function asRfc3339(value: unknown, path: string): Date {
  const s = asNonEmptyString(value, path);
  const date = new Date(s);
  if (!RFC3339.test(s) || Number.isNaN(date.getTime())) throw new PayloadError(`${path}: "${truncate(s)}" is not an RFC 3339 time`);
  return date;
}

/** Decodes a base64 (or base64url) string strictly: Buffer.from() silently skips invalid characters. */
function decodeBase64(value: unknown, path: string): string {
  const s = asNonEmptyString(value, path).replace(/\s+/g, '');
  if ((!BASE64.test(s) && !BASE64URL.test(s)) || s.replace(/=+$/, '').length % 4 === 1) {
    throw new PayloadError(`${path}: not valid base64`);
  }
  return Buffer.from(s, BASE64.test(s) ? 'base64' : 'base64url').toString('utf8');
}

/**
 * A Pub/Sub push delivery (`{"message": {"data": <base64>, "messageId"|"message_id": …}, "subscription": …}`)
 * whose data is a Cloud Audit Log entry. `compute.instances.preempted` gives an interruption of the instance
 * in `resource.labels.instance_id`, deadline = the entry's timestamp + 30 s; any other entry gives nothing.
 */
const parsePubsub: PayloadParser = (payload, ctx) => {
  const envelope = asObject(parseJson(payload, 'pubsub push envelope'), 'envelope');
  const message = asObject(envelope.message, 'message');
  if (message.messageId !== undefined) asNonEmptyString(message.messageId, 'message.messageId');
  else asNonEmptyString(message.message_id, 'message.messageId (or message_id)');
  optionalString(envelope.subscription, 'subscription');
  const text = decodeBase64(message.data, 'message.data');
  const entry = asObject(parseJson(text, 'message.data (base64-decoded log entry)'), 'message.data');
  if (entry.protoPayload === undefined) return [];
  const proto = asObject(entry.protoPayload, 'message.data.protoPayload');
  const method = optionalString(proto.methodName, 'message.data.protoPayload.methodName');
  if (method !== 'compute.instances.preempted') return [];

  const resource = asObject(entry.resource, 'message.data.resource');
  const labels = asObject(resource.labels, 'message.data.resource.labels');
  const instanceId = asNonEmptyString(labels.instance_id, 'message.data.resource.labels.instance_id');
  if (!NUMERIC_ID.test(instanceId)) {
    throw new PayloadError(`message.data.resource.labels.instance_id: "${truncate(instanceId)}" is not a numeric GCE instance id`);
  }
  const resourceName = optionalString(proto.resourceName, 'message.data.protoPayload.resourceName');
  if (resourceName !== undefined && !/^projects\/[^/]+\/zones\/[^/]+\/instances\/[^/]+$/.test(resourceName)) {
    throw new PayloadError(`message.data.protoPayload.resourceName: "${truncate(resourceName)}" is not projects/<p>/zones/<z>/instances/<name>`);
  }
  const at = asRfc3339(entry.timestamp, 'message.data.timestamp');
  const operationId = operationIdOf(entry);
  const facts = preemptionFacts(instanceId, ctx.now, 'pubsub', GCP_PREEMPTION_DEADLINE_MS, operationId);
  facts.deadline = new Date(at.getTime() + GCP_PREEMPTION_DEADLINE_MS);
  return [makeNotice(facts)];
};

function operationIdOf(entry: JsonObject): string | undefined {
  if (entry.operation === undefined) return undefined;
  const operation = asObject(entry.operation, 'message.data.operation');
  const id = optionalString(operation.id, 'message.data.operation.id');
  return id && id.trim() !== '' ? id : undefined;
}

export const gcpParsers: Record<string, PayloadParser> = {
  'gcp-preempted': parsePreempted,
  'gcp-maintenance-event': parseMaintenanceEvent,
  pubsub: parsePubsub,
};
