import { PayloadError } from '../../src/errors.js';
import { makeNotice, type Notice, type NoticeAction, type NoticeFacts, type NoticeKind, type NoticeSource } from '../../src/notice.js';
import { asArray, asNonEmptyString, asObject, asString, optionalString, parseJson, truncate, type JsonObject } from '../../src/payload.js';
import type { ParseContext, PayloadParser } from '../../src/provider.js';

/**
 * Azure notices: Scheduled Events documents (IMDS `/metadata/scheduledevents`) and Event Grid deliveries
 * (Event Grid schema or CloudEvents 1.0) of `Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted`
 * and `Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated`. The watcher reads documents with
 * the same functions, so a document seen live and the same document given to `spotwatch parse` agree.
 *
 * Identity: a scheduled event's `EventId` (stable from Scheduled to Started, and the same in IMDS, Event Grid
 * and Resource Graph), so one event is one notice id whichever way it arrives.
 */

/** What each `EventType` means for the VMs in `Resources`. */
export const AZURE_EVENT_TYPES: Record<string, { kind: NoticeKind; action: NoticeAction }> = {
  Preempt: { kind: 'interruption', action: 'terminate' },
  Terminate: { kind: 'interruption', action: 'terminate' },
  Reboot: { kind: 'maintenance', action: 'reboot' },
  Redeploy: { kind: 'maintenance', action: 'redeploy' },
  Freeze: { kind: 'maintenance', action: 'freeze' },
};

/**
 * A Spot VM eviction (ResourceAnnotated); the annotation comes after the fact, the VM has ~30 s.
 *
 * Its notice cannot share the id of the same eviction's `Preempt` scheduled event: the documented annotation
 * payload carries its own id (`resourceInfo.name`), `targetResourceId` and `occurredTime`, the scheduled event
 * `EventId`, `Resources` and `NotBefore` — neither names the other, and how `occurredTime` relates to
 * `NotBefore` is not documented (merging by time could also swallow an eviction into a user's `Terminate` a
 * few minutes out, with its longer deadline). So it is keyed by the annotation id: a second job, which is
 * harmless — it arrives after the `Preempt` notice was planned, and the planner only takes tasks still
 * `running`, so it plans nothing new. Each new eviction has new ids on both sides, so Azure needs no episodes
 * (src/notice-episodes.ts).
 */
export const AZURE_PREEMPTED_ANNOTATION = 'VirtualMachinePreempted';
export const AZURE_PREEMPTION_WINDOW_MS = 30_000;

export type ScheduledEventStatus = 'Scheduled' | 'Started' | 'Completed' | 'Canceled';
const STATUSES: readonly ScheduledEventStatus[] = ['Scheduled', 'Started', 'Completed', 'Canceled'];

export interface ScheduledEvent {
  eventId: string;
  eventType: string;
  resourceType: string | undefined;
  resources: string[];
  status: ScheduledEventStatus;
  /** Parsed `NotBefore`; undefined when it is empty (a Started event). */
  notBefore: Date | undefined;
  description: string | undefined;
  eventSource: string | undefined;
  durationInSeconds: number | undefined;
}

export interface ScheduledEventsDocument {
  documentIncarnation: number;
  events: ScheduledEvent[];
}

/** A scheduled event id: a GUID in practice; anything outside this shape is refused (it goes into approvals). */
const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A VM resource name as Scheduled Events lists it (`myvm`, `vmss_3`). */
const RESOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._()-]{0,127}$/;
/** RFC 1123 as Scheduled Events writes NotBefore: `Mon, 19 Sep 2016 18:29:47 GMT`. */
const RFC1123 = /^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} (?:GMT|UTC)$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})$/;
const MAX_EVENTS = 1000;
const MAX_RESOURCES = 1000;

/** `NotBefore`: empty → undefined, else an RFC 1123 time (ISO-8601 tolerated). */
export function readNotBefore(value: unknown, path: string): Date | undefined {
  const s = asString(value, path).trim();
  if (s === '') return undefined;
  const date = new Date(s);
  if ((!RFC1123.test(s) && !ISO_TIME.test(s)) || Number.isNaN(date.getTime())) {
    throw new PayloadError(`${path}: "${truncate(s)}" is not an RFC 1123 time (e.g. "Mon, 19 Sep 2016 18:29:47 GMT")`);
  }
  return date;
}

export function asEventId(value: unknown, path: string): string {
  const s = asNonEmptyString(value, path);
  if (!EVENT_ID.test(s)) throw new PayloadError(`${path}: "${truncate(s)}" is not a scheduled event id`);
  return s;
}

/** Reads the scheduled-event fields of `o` (an IMDS event, or Event Grid's `resourceInfo.properties`). */
export function readScheduledEvent(o: JsonObject, path: string): ScheduledEvent {
  const eventId = asEventId(o.EventId, `${path}.EventId`);
  const eventType = asNonEmptyString(o.EventType, `${path}.EventType`);
  const resources = asArray(o.Resources, `${path}.Resources`);
  if (resources.length > MAX_RESOURCES) throw new PayloadError(`${path}.Resources: more than ${MAX_RESOURCES} entries`);
  const names = resources.map((r, i) => {
    const name = asNonEmptyString(r, `${path}.Resources[${i}]`);
    if (!RESOURCE_NAME.test(name)) throw new PayloadError(`${path}.Resources[${i}]: "${truncate(name)}" is not a VM resource name`);
    return name;
  });
  const status = asNonEmptyString(o.EventStatus, `${path}.EventStatus`);
  if (!(STATUSES as readonly string[]).includes(status)) {
    throw new PayloadError(`${path}.EventStatus: "${truncate(status)}" is not one of ${STATUSES.join(', ')}`);
  }
  const duration = o.DurationInSeconds;
  if (duration !== undefined && duration !== null && (typeof duration !== 'number' || !Number.isFinite(duration))) {
    throw new PayloadError(`${path}.DurationInSeconds: expected a number, got ${typeof duration}`);
  }
  return {
    eventId,
    eventType,
    resourceType: optionalString(o.ResourceType, `${path}.ResourceType`),
    resources: names,
    status: status as ScheduledEventStatus,
    notBefore: o.NotBefore === undefined || o.NotBefore === null ? undefined : readNotBefore(o.NotBefore, `${path}.NotBefore`),
    description: optionalString(o.Description, `${path}.Description`),
    eventSource: optionalString(o.EventSource, `${path}.EventSource`),
    durationInSeconds: typeof duration === 'number' ? duration : undefined,
  };
}

/** `{"DocumentIncarnation": n, "Events": [...]}` as IMDS serves it. */
export function readScheduledEventsDocument(text: string): ScheduledEventsDocument {
  const doc = asObject(parseJson(text, 'scheduled events document'), 'document');
  const incarnation = doc.DocumentIncarnation;
  if (typeof incarnation !== 'number' || !Number.isInteger(incarnation) || incarnation < 0) {
    throw new PayloadError(`DocumentIncarnation: expected a non-negative integer, got ${incarnation === undefined ? 'nothing' : JSON.stringify(incarnation)?.slice(0, 40)}`);
  }
  const events = asArray(doc.Events, 'Events');
  if (events.length > MAX_EVENTS) throw new PayloadError(`Events: more than ${MAX_EVENTS} events`);
  return { documentIncarnation: incarnation, events: events.map((e, i) => readScheduledEvent(asObject(e, `Events[${i}]`), `Events[${i}]`)) };
}

/**
 * The notice facts of one scheduled event for one VM, or undefined for an event that announces nothing
 * (an unknown EventType, or Completed). `startedAt`: when the event was first seen Started (its deadline
 * when NotBefore is empty); `Canceled` gives the cancellation of the event's notice.
 */
export function scheduledEventFacts(ev: ScheduledEvent, instanceId: string, detectedAt: Date, source: NoticeSource, startedAt: Date = detectedAt): NoticeFacts | undefined {
  const meaning = AZURE_EVENT_TYPES[ev.eventType];
  if (!meaning || ev.status === 'Completed') return undefined;
  const deadline = ev.notBefore ?? (ev.status === 'Started' ? startedAt : undefined);
  return {
    provider: 'azure',
    kind: ev.status === 'Canceled' ? 'cancelled' : meaning.kind,
    action: meaning.action,
    instanceId,
    deadline,
    detectedAt,
    source,
    eventId: ev.eventId,
    identity: ev.eventId,
  };
}

/** The cancellation of an earlier notice: same facts (identity, action, deadline), kind `cancelled`. */
export function cancelledFacts(original: NoticeFacts, detectedAt: Date): NoticeFacts {
  return { ...original, kind: 'cancelled', detectedAt };
}

/**
 * The VM resource name Scheduled Events lists, from an ARM resource id: `…/virtualMachines/<name>` → name,
 * `…/virtualMachineScaleSets/<set>/virtualMachines/<n>` → `<set>_<n>`.
 */
export function resourceNameFromId(id: string): string | undefined {
  const scaleSet = /\/virtualMachineScaleSets\/([^/]+)\/virtualMachines\/([^/]+)\/?$/i.exec(id);
  if (scaleSet) return `${scaleSet[1]}_${scaleSet[2]}`;
  return /\/virtualMachines\/([^/]+)\/?$/i.exec(id)?.[1];
}

/**
 * The VM resource name from IMDS `/metadata/instance/compute`: for a Uniform scale-set instance
 * `vmScaleSetName` + `_` + the instance id (the last segment of `resourceId`), else `name`.
 */
export function resourceNameFromCompute(compute: JsonObject): string {
  const resourceId = optionalString(compute.resourceId, 'compute.resourceId');
  const scaleSet = optionalString(compute.vmScaleSetName, 'compute.vmScaleSetName');
  const uniform = resourceId ? /\/virtualMachineScaleSets\/([^/]+)\/virtualMachines\/([^/]+)\/?$/i.exec(resourceId) : null;
  if (uniform) return `${scaleSet || uniform[1]}_${uniform[2]}`;
  const name = optionalString(compute.name, 'compute.name');
  if (name && name.trim() !== '') return name.trim();
  if (resourceId) {
    const fromId = resourceNameFromId(resourceId);
    if (fromId) return fromId;
  }
  throw new PayloadError('compute.name: missing, and compute.resourceId names no virtual machine');
}

function requireInstanceId(ctx: ParseContext): string {
  const id = ctx.instanceId?.trim();
  if (!id) throw new PayloadError('instanceId: a scheduled events document lists events for many VMs; pass --instance-id (this VM\'s resource name, e.g. vmss_3)');
  return id;
}

/** An IMDS Scheduled Events document: the notices of the events whose Resources include `--instance-id`. */
const parseScheduledEvents: PayloadParser = (payload, ctx) => {
  const instanceId = requireInstanceId(ctx);
  const doc = readScheduledEventsDocument(payload);
  return doc.events.flatMap((ev) => {
    if (!ev.resources.includes(instanceId)) return [];
    const facts = scheduledEventFacts(ev, instanceId, ctx.now, 'imds');
    return facts ? [makeNotice(facts)] : [];
  });
};

const SCHEDULED_EVENT_EMITTED = 'Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted';
const RESOURCE_ANNOTATED = 'Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated';
const SUBSCRIPTION_VALIDATION = 'Microsoft.EventGrid.SubscriptionValidationEvent';
const MAX_DELIVERY = 500;

/** `obj[key]`, matching the key case-insensitively (Event Grid's docs spell `resourceInfo` both ways). */
function getCI(obj: JsonObject, key: string): unknown {
  if (key in obj) return obj[key];
  const lower = key.toLowerCase();
  const found = Object.keys(obj).find((k) => k.toLowerCase() === lower);
  return found === undefined ? undefined : obj[found];
}

/**
 * An Event Grid delivery: one event or an array, in the Event Grid schema (`eventType`, `subject`, `data`)
 * or CloudEvents 1.0 (`specversion`, `type`, `source`, `data`). Notices come from scheduled events (one per
 * VM in Resources) and from the `VirtualMachinePreempted` health annotation; the subscription validation
 * event and every other event type give nothing.
 */
const parseEventGrid: PayloadParser = (payload, ctx) => {
  const json = parseJson(payload, 'event grid delivery');
  const events = Array.isArray(json) ? json : [json];
  if (events.length > MAX_DELIVERY) throw new PayloadError(`delivery: more than ${MAX_DELIVERY} events`);
  const single = !Array.isArray(json);
  return events.flatMap((raw, i) => parseEventGridEvent(asObject(raw, single ? 'event' : `[${i}]`), single ? '' : `[${i}].`, ctx));
};

function parseEventGridEvent(ev: JsonObject, prefix: string, ctx: ParseContext): Notice[] {
  const cloudEvent = ev.specversion !== undefined;
  if (cloudEvent && asNonEmptyString(ev.specversion, `${prefix}specversion`) !== '1.0') {
    throw new PayloadError(`${prefix}specversion: "${truncate(String(ev.specversion))}" is not 1.0`);
  }
  const typeField = cloudEvent ? 'type' : 'eventType';
  const type = asNonEmptyString(ev[typeField], `${prefix}${typeField}`);
  asNonEmptyString(ev.id, `${prefix}id`);
  if (type === SUBSCRIPTION_VALIDATION || (type !== SCHEDULED_EVENT_EMITTED && type !== RESOURCE_ANNOTATED)) return [];
  const data = asObject(ev.data, `${prefix}data`);
  const resourceInfo = asObject(getCI(data, 'resourceInfo'), `${prefix}data.resourceInfo`);
  const properties = asObject(getCI(resourceInfo, 'properties'), `${prefix}data.resourceInfo.properties`);
  const propsPath = `${prefix}data.resourceInfo.properties`;

  if (type === SCHEDULED_EVENT_EMITTED) {
    const scheduled = readScheduledEvent(properties, propsPath);
    return scheduled.resources.flatMap((instanceId) => {
      const facts = scheduledEventFacts(scheduled, instanceId, ctx.now, 'eventgrid');
      return facts ? [makeNotice(facts)] : [];
    });
  }

  // ResourceAnnotated: only the Spot eviction annotation is a notice.
  const annotation = asNonEmptyString(properties.annotationName, `${propsPath}.annotationName`);
  if (annotation !== AZURE_PREEMPTED_ANNOTATION) return [];
  const target = asNonEmptyString(properties.targetResourceId, `${propsPath}.targetResourceId`);
  const instanceId = resourceNameFromId(target);
  if (!instanceId) throw new PayloadError(`${propsPath}.targetResourceId: "${truncate(target)}" names no virtual machine`);
  const occurredRaw = asNonEmptyString(properties.occurredTime, `${propsPath}.occurredTime`);
  const occurred = new Date(occurredRaw);
  if (!ISO_TIME.test(occurredRaw) || Number.isNaN(occurred.getTime())) {
    throw new PayloadError(`${propsPath}.occurredTime: "${truncate(occurredRaw)}" is not an ISO-8601 time`);
  }
  const annotationId = asEventId(getCI(resourceInfo, 'name'), `${prefix}data.resourceInfo.name`);
  return [
    makeNotice({
      provider: 'azure',
      kind: 'interruption',
      action: 'terminate',
      instanceId,
      deadline: new Date(occurred.getTime() + AZURE_PREEMPTION_WINDOW_MS),
      detectedAt: ctx.now,
      source: 'eventgrid',
      eventId: annotationId,
    }),
  ];
}

export const azureParsers: Record<string, PayloadParser> = {
  'azure-scheduled-events': parseScheduledEvents,
  eventgrid: parseEventGrid,
};
