import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ControlError, controlBody, startEmulatorServer, type MetadataRequest, type MetadataResponse } from '../../src/emulator/emulator-server.js';
import type { EmulatorHandle, EmulatorOptions } from '../../src/provider.js';
import { sleep } from '../../src/util/sleep.js';
import { AZURE_COMPUTE_PATH, AZURE_SCHEDULED_EVENTS_PATH } from './metadata-client.js';

/**
 * `spotwatch simulate azure`: Azure IMDS Scheduled Events (`GET` the document, `POST` approvals) and the
 * compute metadata. Like the real service it answers 400 without `Metadata: true` or without a valid
 * api-version, bumps DocumentIncarnation on every change, broadcasts events for other VMs of the placement
 * group, moves events Scheduled → Started (on approval or once NotBefore passes, with NotBefore emptied)
 * → removed, and can make the first call slow (the service enabling itself: up to two minutes on Azure).
 */

export const AZURE_SIMULATE_COMMANDS: Record<string, string> = {
  schedule:
    'add an event: --type Preempt|Terminate|Reboot|Redeploy|Freeze [--resources vmss_3,vmss_4] [--not-before-in S] [--status Scheduled|Started] [--event-id ID] [--remove-after-start-s S]',
  start: 'start an event now (NotBefore emptied): --event-id ID',
  remove: 'remove an event from the document (before it started: a cancellation): --event-id ID',
  configure: 'service behaviour: --first-call-delay-ms MS (the next first call is that slow; 0: instant)',
};

const EVENT_TYPES = ['Preempt', 'Terminate', 'Reboot', 'Redeploy', 'Freeze'] as const;
type EventType = (typeof EVENT_TYPES)[number];
/** Documented minimum notice per event type, the default NotBefore. */
const MINIMUM_NOTICE_S: Record<EventType, number> = { Preempt: 30, Terminate: 300, Reboot: 900, Redeploy: 600, Freeze: 900 };
const DESCRIPTIONS: Record<EventType, string> = {
  Preempt: 'Virtual machine is being preempted.',
  Terminate: 'Virtual machine is being deleted.',
  Reboot: 'Virtual machine is going to be restarted as requested by authorized user.',
  Redeploy: 'Virtual machine is being redeployed to another host.',
  Freeze: 'Virtual machine is being paused because of a memory-preserving Live Migration operation.',
};
const SCHEDULED_EVENTS_VERSIONS = ['2017-03-01', '2017-08-01', '2017-11-01', '2019-01-01', '2019-04-01', '2019-08-01', '2020-07-01'];
const NEWEST_VERSIONS = ['2021-02-01', '2020-12-01', '2020-10-01'];
const DEFAULT_INSTANCE = 'spotwatch_0';

const eventIdSchema = z.union([z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'not a valid event id'), z.number().int().nonnegative()]).transform(String);
const resourcesSchema = z
  .union([z.string(), z.array(z.string())])
  .transform((r) => (Array.isArray(r) ? r : r.split(',')).map((s) => s.trim()).filter((s) => s !== ''))
  .pipe(z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._()-]{0,127}$/, 'not a VM resource name')).min(1).max(100));

const scheduleSchema = z
  .object({
    type: z.enum(EVENT_TYPES),
    resources: resourcesSchema.optional(),
    notBeforeIn: z.number().int().min(0).max(30 * 86_400).optional(),
    status: z.enum(['Scheduled', 'Started']).default('Scheduled'),
    eventId: eventIdSchema.optional(),
    description: z.string().max(500).optional(),
    eventSource: z.enum(['Platform', 'User']).default('Platform'),
    durationInSeconds: z.number().int().min(-1).max(86_400).optional(),
    removeAfterStartS: z.number().min(0).max(86_400).optional(),
  })
  .strict();
const eventRefSchema = z.object({ eventId: eventIdSchema }).strict();
const configureSchema = z.object({ firstCallDelayMs: z.number().int().min(0).max(600_000) }).strict();
const emptySchema = z.object({}).strict();
const approvalSchema = z.object({ StartRequests: z.array(z.object({ EventId: z.string().min(1).max(128) }).strict()).min(1).max(100) }).strict();

interface EmulatedEvent {
  eventId: string;
  eventType: EventType;
  resources: string[];
  status: 'Scheduled' | 'Started';
  notBefore: Date | undefined;
  description: string;
  eventSource: 'Platform' | 'User';
  durationInSeconds: number;
  removeAfterStartMs: number | undefined;
  startedAt: number | undefined;
}

interface Approval {
  eventId: string;
  at: string;
  /** The event existed and was Scheduled (and so was started by the approval). */
  started: boolean;
}

export async function startAzureEmulator(options: EmulatorOptions): Promise<EmulatorHandle> {
  const instance = options.instanceId ?? DEFAULT_INSTANCE;
  const vmId = randomUUID();
  const events = new Map<string, EmulatedEvent>();
  let incarnation = 0;
  let approvals: Approval[] = [];
  let firstCallDelayMs = 0;
  /** When the service counts as enabled (set by the first Scheduled Events call); undefined: not yet. */
  let enabledAt: number | undefined;
  const counters = { scheduledEventsGets: 0, approvalPosts: 0, computeGets: 0, badRequests: 0 };
  const logger = options.logger;

  /** Applies the passage of time: NotBefore reached → Started; Started long enough → removed. */
  function advance(now = Date.now()): void {
    let changed = false;
    for (const ev of events.values()) {
      if (ev.status === 'Scheduled' && ev.notBefore && ev.notBefore.getTime() <= now) {
        startEvent(ev, now);
        changed = true;
      }
      if (ev.status === 'Started' && ev.removeAfterStartMs !== undefined && ev.startedAt !== undefined && now - ev.startedAt >= ev.removeAfterStartMs) {
        events.delete(ev.eventId);
        changed = true;
      }
    }
    if (changed) incarnation++;
  }

  function startEvent(ev: EmulatedEvent, now: number): void {
    ev.status = 'Started';
    ev.notBefore = undefined;
    ev.startedAt = now;
  }

  function documentJson(): string {
    return JSON.stringify({
      DocumentIncarnation: incarnation,
      Events: [...events.values()].map((ev) => ({
        EventId: ev.eventId,
        EventStatus: ev.status,
        EventType: ev.eventType,
        ResourceType: 'VirtualMachine',
        Resources: ev.resources,
        NotBefore: ev.notBefore ? ev.notBefore.toUTCString() : '',
        Description: ev.description,
        EventSource: ev.eventSource,
        DurationInSeconds: ev.durationInSeconds,
      })),
    });
  }

  function computeJson(): Record<string, unknown> {
    const scaleSet = /^(.+)_(\d+)$/.exec(instance);
    const resourceGroup = 'spotwatch-rg';
    const sub = '00000000-0000-0000-0000-000000000000';
    const resourceId = scaleSet
      ? `/subscriptions/${sub}/resourceGroups/${resourceGroup}/providers/Microsoft.Compute/virtualMachineScaleSets/${scaleSet[1]}/virtualMachines/${scaleSet[2]}`
      : `/subscriptions/${sub}/resourceGroups/${resourceGroup}/providers/Microsoft.Compute/virtualMachines/${instance}`;
    return {
      azEnvironment: 'AzurePublicCloud',
      evictionPolicy: 'Delete',
      location: 'eastus',
      name: instance,
      osProfile: { adminUsername: 'azureuser', computerName: scaleSet ? `${scaleSet[1]}00000${scaleSet[2]}` : instance },
      osType: 'Linux',
      priority: 'Spot',
      provider: 'Microsoft.Compute',
      resourceGroupName: resourceGroup,
      resourceId,
      subscriptionId: sub,
      vmId,
      vmScaleSetName: scaleSet ? scaleSet[1] : '',
      vmSize: 'Standard_NC24ads_A100_v4',
      zone: '1',
    };
  }

  function state() {
    advance();
    return {
      instance,
      documentIncarnation: incarnation,
      document: JSON.parse(documentJson()) as unknown,
      approvals,
      firstCallDelayMs,
      enabled: enabledAt !== undefined && Date.now() >= enabledAt,
      ...counters,
    };
  }

  function json(status: number, body: unknown): MetadataResponse {
    return { status, headers: { 'content-type': 'application/json; charset=utf-8' }, body: typeof body === 'string' ? body : JSON.stringify(body) };
  }

  function badRequest(error: string, extra: Record<string, unknown> = {}): MetadataResponse {
    counters.badRequests++;
    return json(400, { error, ...extra });
  }

  async function handleMetadata({ req, url, body }: MetadataRequest, signal: AbortSignal): Promise<MetadataResponse> {
    const path = url.pathname.replace(/\/+$/, '');
    if (path !== AZURE_SCHEDULED_EVENTS_PATH && path !== AZURE_COMPUTE_PATH && path !== '/metadata/instance') {
      return json(404, { error: 'Not found' });
    }
    if (req.headers['x-forwarded-for'] !== undefined) return badRequest('Bad request. X-Forwarded-For header is not allowed.');
    if (String(req.headers.metadata ?? '').toLowerCase() !== 'true') return badRequest('Bad request. Required metadata header not specified');
    const apiVersion = url.searchParams.get('api-version');
    if (!apiVersion) {
      return badRequest('Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds', { 'newest-versions': NEWEST_VERSIONS });
    }

    if (path !== AZURE_SCHEDULED_EVENTS_PATH) {
      if (req.method !== 'GET') return json(405, { error: 'Method not allowed' });
      if (!/^\d{4}-\d{2}-\d{2}$/.test(apiVersion) || apiVersion < '2017-03-01') {
        return badRequest('Bad request. api-version is invalid. For more information refer to aka.ms/azureimds', { 'newest-versions': NEWEST_VERSIONS });
      }
      counters.computeGets++;
      const compute = computeJson();
      return json(200, path === AZURE_COMPUTE_PATH ? compute : { compute, network: { interface: [] } });
    }

    if (!SCHEDULED_EVENTS_VERSIONS.includes(apiVersion)) {
      return badRequest('Bad request. api-version is invalid. For more information refer to aka.ms/azureimds', { 'newest-versions': SCHEDULED_EVENTS_VERSIONS.slice(-3).reverse() });
    }
    // The first call enables the service; until then every call waits for it.
    enabledAt ??= Date.now() + firstCallDelayMs;
    if (Date.now() < enabledAt) await sleep(enabledAt - Date.now(), signal);
    if (signal.aborted) return json(499, { error: 'client closed request' });

    if (req.method === 'GET') {
      counters.scheduledEventsGets++;
      advance();
      return json(200, documentJson());
    }
    if (req.method !== 'POST') return json(405, { error: 'Method not allowed' });
    counters.approvalPosts++;
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return badRequest('Bad request. The request body is not valid JSON.');
    }
    const request = approvalSchema.safeParse(parsed);
    if (!request.success) return badRequest('Bad request. Expected {"StartRequests": [{"EventId": "<id>"}]}.');
    advance();
    const now = Date.now();
    let changed = false;
    for (const { EventId } of request.data.StartRequests) {
      const ev = events.get(EventId);
      const starts = ev?.status === 'Scheduled';
      if (ev && starts) {
        startEvent(ev, now);
        changed = true;
      }
      approvals.push({ eventId: EventId, at: new Date(now).toISOString(), started: starts });
      logger?.info({ eventId: EventId, started: starts }, 'scheduled event approved');
    }
    if (changed) incarnation++;
    return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: '' };
  }

  function eventOrThrow(eventId: string): EmulatedEvent {
    advance();
    const ev = events.get(eventId);
    if (!ev) throw new ControlError(404, `no event "${eventId}"; known: ${[...events.keys()].join(', ') || 'none'}`);
    return ev;
  }

  const server = await startEmulatorServer({
    host: options.host,
    port: options.port,
    logger,
    handleMetadata,
    control: {
      state,
      reset: (b) => {
        controlBody(emptySchema, b);
        events.clear();
        approvals = [];
        firstCallDelayMs = 0;
        enabledAt = undefined;
        incarnation++;
        for (const key of Object.keys(counters) as (keyof typeof counters)[]) counters[key] = 0;
        return state();
      },
      schedule: (b) => {
        const s = controlBody(scheduleSchema, b);
        advance();
        const eventId = s.eventId ?? randomUUID();
        if (events.has(eventId)) throw new ControlError(409, `event "${eventId}" already exists`);
        const now = Date.now();
        const ev: EmulatedEvent = {
          eventId,
          eventType: s.type,
          resources: s.resources ?? [instance],
          status: s.status,
          notBefore: s.status === 'Started' ? undefined : new Date(Math.floor((now + (s.notBeforeIn ?? MINIMUM_NOTICE_S[s.type]) * 1000) / 1000) * 1000),
          description: s.description ?? DESCRIPTIONS[s.type],
          eventSource: s.eventSource,
          durationInSeconds: s.durationInSeconds ?? (s.type === 'Freeze' ? 5 : -1),
          removeAfterStartMs: s.removeAfterStartS === undefined ? undefined : s.removeAfterStartS * 1000,
          startedAt: s.status === 'Started' ? now : undefined,
        };
        events.set(eventId, ev);
        incarnation++;
        logger?.info({ eventId, type: s.type, resources: ev.resources }, 'scheduled event added');
        return { eventId, ...state() };
      },
      start: (b) => {
        const { eventId } = controlBody(eventRefSchema, b);
        const ev = eventOrThrow(eventId);
        if (ev.status !== 'Started') {
          startEvent(ev, Date.now());
          incarnation++;
        }
        return state();
      },
      remove: (b) => {
        const { eventId } = controlBody(eventRefSchema, b);
        eventOrThrow(eventId);
        events.delete(eventId);
        incarnation++;
        return state();
      },
      configure: (b) => {
        const c = controlBody(configureSchema, b);
        firstCallDelayMs = c.firstCallDelayMs;
        enabledAt = undefined;
        return state();
      },
    },
  });

  return { url: server.url, controlUrl: server.controlUrl, close: () => server.close() };
}
