import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ControlError, controlBody, startEmulatorServer, type MetadataRequest, type MetadataResponse } from '../../src/emulator/emulator-server.js';
import type { EmulatorHandle, EmulatorOptions } from '../../src/provider.js';

/**
 * An EC2 Instance Metadata Service (IMDS) emulator, faithful to the documented behaviour of the paths
 * spotwatch reads: IMDSv2 session tokens (PUT /latest/api/token, TTL 1–21600 s, 401 for a missing or
 * expired token when tokens are required, 403 for a PUT carrying X-Forwarded-For), IMDSv1 when tokens are
 * optional, 404 with IMDS's HTML body where a path has nothing, and `[]` for no scheduled events.
 *
 * A control API (`spotwatch simulate aws <command>`) schedules what the cloud would do.
 */

const NOT_FOUND_BODY = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>
`;

const SCHEDULED_CODES = ['instance-reboot', 'system-reboot', 'system-maintenance', 'instance-retirement', 'instance-stop'] as const;
const LIFECYCLE_STATES = ['Pending', 'Pending:Wait', 'Pending:Proceed', 'InService', 'Standby', 'Terminating', 'Terminating:Wait', 'Terminating:Proceed', 'Terminated', 'Detaching', 'Detached', 'Warmed:Pending', 'Warmed:Running', 'Warmed:Stopped', 'Warmed:Terminated'] as const;

interface ScheduledEvent {
  EventId: string;
  Code: (typeof SCHEDULED_CODES)[number];
  Description: string;
  NotBefore: Date;
  NotAfter: Date;
  NotBeforeDeadline?: Date | undefined;
  State: 'active' | 'completed' | 'canceled';
  visibleAt: number;
}

interface AwsEmulatorState {
  identity: { instanceId: string; instanceType: string; zone: string; lifecycle: 'spot' | 'on-demand'; hostname: string; amiId: string };
  requireToken: boolean;
  tokens: Map<string, number>;
  interruption?: { action: 'terminate' | 'stop' | 'hibernate'; time: Date; visibleAt: number } | undefined;
  rebalance?: { noticeTime: Date; visibleAt: number } | undefined;
  scheduled: ScheduledEvent[];
  lifecycle?: { state: string; visibleAt: number } | undefined;
}

const seconds = z.number().min(0).max(7 * 24 * 3600);

const schemas = {
  interrupt: z.object({ action: z.enum(['terminate', 'stop', 'hibernate']).default('terminate'), delay: seconds.default(0), timeLeft: seconds.default(120) }).strict(),
  rebalance: z.object({ delay: seconds.default(0) }).strict(),
  schedule: z
    .object({
      code: z.enum(SCHEDULED_CODES).default('instance-stop'),
      notBeforeIn: seconds.default(600),
      duration: seconds.default(1800),
      deadlineIn: seconds.optional(),
      eventId: z.string().regex(/^instance-event-[0-9a-f]+$/, 'looks like instance-event-0123abcd').optional(),
      description: z.string().max(500).optional(),
      delay: seconds.default(0),
    })
    .strict(),
  eventRef: z.object({ eventId: z.string().min(1) }).strict(),
  lifecycle: z.object({ state: z.enum(LIFECYCLE_STATES), delay: seconds.default(0) }).strict(),
  identity: z
    .object({
      instanceId: z.string().regex(/^i-[0-9a-f]{8,17}$/, 'looks like i-0123456789abcdef0').optional(),
      instanceType: z.string().min(1).optional(),
      zone: z.string().min(1).optional(),
      lifecycle: z.enum(['spot', 'on-demand']).optional(),
      hostname: z.string().min(1).optional(),
    })
    .strict(),
  config: z.object({ requireToken: z.boolean() }).strict(),
  empty: z.object({}).strict(),
};

/** "21 Jan 2019 09:00:43 GMT", the format IMDS uses for scheduled events. */
export function imdsEventTime(date: Date): string {
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getUTCDate()} ${months[date.getUTCMonth()]} ${date.getUTCFullYear()} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} GMT`;
}

/** "2017-09-18T08:22:00Z": whole seconds, as spot/instance-action has it. */
function isoSeconds(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

export async function startAwsEmulator(options: EmulatorOptions): Promise<EmulatorHandle> {
  const state: AwsEmulatorState = {
    identity: {
      instanceId: options.instanceId ?? `i-${randomHex(8).slice(0, 17)}`,
      instanceType: 'p5.48xlarge',
      zone: 'us-east-1a',
      lifecycle: 'spot',
      hostname: 'ip-10-0-0-12.ec2.internal',
      amiId: 'ami-0abcdef1234567890',
    },
    requireToken: false,
    tokens: new Map(),
    scheduled: [],
  };
  const visible = <T extends { visibleAt: number }>(item: T | undefined): item is T => item !== undefined && Date.now() >= item.visibleAt;

  const text = (body: string, status = 200): MetadataResponse => ({ status, body });
  const notFound = (): MetadataResponse => ({ status: 404, headers: { 'content-type': 'text/html' }, body: NOT_FOUND_BODY });

  function metadataPath(path: string): MetadataResponse {
    const id = state.identity;
    switch (path) {
      case '':
        return text(['ami-id', 'autoscaling/', 'events/', 'hostname', 'instance-id', 'instance-life-cycle', 'instance-type', 'local-hostname', 'placement/', 'spot/'].join('\n'));
      case 'instance-id':
        return text(id.instanceId);
      case 'instance-type':
        return text(id.instanceType);
      case 'placement/availability-zone':
        return text(id.zone);
      case 'placement/region':
        return text(id.zone.replace(/[a-z]$/, ''));
      case 'instance-life-cycle':
        return text(id.lifecycle);
      case 'local-hostname':
      case 'hostname':
        return text(id.hostname);
      case 'ami-id':
        return text(id.amiId);
      case 'spot/instance-action':
        return visible(state.interruption) && id.lifecycle === 'spot'
          ? { status: 200, headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ action: state.interruption.action, time: isoSeconds(state.interruption.time) }) }
          : notFound();
      case 'spot/termination-time':
        return visible(state.interruption) && state.interruption.action === 'terminate' ? text(isoSeconds(state.interruption.time)) : notFound();
      case 'events/recommendations/rebalance':
        return visible(state.rebalance) ? text(JSON.stringify({ noticeTime: isoSeconds(state.rebalance.noticeTime) })) : notFound();
      case 'events/maintenance/scheduled':
        return text(JSON.stringify(state.scheduled.filter((e) => visible(e)).map(renderEvent), null, 2));
      case 'autoscaling/target-lifecycle-state':
        return visible(state.lifecycle) ? text(state.lifecycle.state) : notFound();
      default:
        return notFound();
    }
  }

  function renderEvent(e: ScheduledEvent): Record<string, string> {
    const prefix = e.State === 'canceled' ? '[Canceled] ' : e.State === 'completed' ? '[Completed] ' : '';
    return {
      NotBefore: imdsEventTime(e.NotBefore),
      Code: e.Code,
      Description: `${prefix}${e.Description}`,
      EventId: e.EventId,
      NotAfter: imdsEventTime(e.NotAfter),
      State: e.State,
      ...(e.NotBeforeDeadline ? { NotBeforeDeadline: imdsEventTime(e.NotBeforeDeadline) } : {}),
    };
  }

  function handleToken(request: MetadataRequest): MetadataResponse {
    if (request.req.method !== 'PUT') return { status: 405, body: '' };
    if (request.req.headers['x-forwarded-for'] !== undefined) return { status: 403, body: '' };
    const ttlHeader = request.req.headers['x-aws-ec2-metadata-token-ttl-seconds'];
    const ttl = Number(Array.isArray(ttlHeader) ? ttlHeader[0] : ttlHeader);
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21_600) return { status: 400, body: '' };
    const token = randomBytes(42).toString('base64');
    state.tokens.set(token, Date.now() + ttl * 1000);
    return { status: 200, headers: { 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) }, body: token };
  }

  function handleMetadata(request: MetadataRequest): MetadataResponse {
    const { pathname } = request.url;
    if (pathname === '/latest/api/token') return handleToken(request);
    if (request.req.method !== 'GET' && request.req.method !== 'HEAD') return { status: 405, body: '' };
    const tokenHeader = request.req.headers['x-aws-ec2-metadata-token'];
    const token = Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader;
    if (token !== undefined) {
      const expiresAt = state.tokens.get(token);
      if (expiresAt === undefined || expiresAt < Date.now()) return { status: 401, body: '' };
    } else if (state.requireToken) {
      return { status: 401, body: '' };
    }
    if (pathname === '/latest/meta-data' || pathname === '/latest/meta-data/') return metadataPath('');
    if (!pathname.startsWith('/latest/meta-data/')) return notFound();
    return metadataPath(pathname.slice('/latest/meta-data/'.length).replace(/\/+$/, ''));
  }

  function findEvent(eventId: string): ScheduledEvent {
    const event = state.scheduled.find((e) => e.EventId === eventId);
    if (!event) throw new ControlError(404, `no scheduled event ${eventId}; known: ${state.scheduled.map((e) => e.EventId).join(', ') || 'none'}`);
    return event;
  }

  function snapshot(): unknown {
    return {
      identity: state.identity,
      requireToken: state.requireToken,
      interruption: state.interruption && { action: state.interruption.action, time: state.interruption.time.toISOString(), visibleAt: new Date(state.interruption.visibleAt).toISOString() },
      rebalance: state.rebalance && { noticeTime: state.rebalance.noticeTime.toISOString(), visibleAt: new Date(state.rebalance.visibleAt).toISOString() },
      scheduled: state.scheduled.map((e) => ({ ...renderEvent(e), visibleAt: new Date(e.visibleAt).toISOString() })),
      lifecycle: state.lifecycle && { state: state.lifecycle.state, visibleAt: new Date(state.lifecycle.visibleAt).toISOString() },
    };
  }

  const server = await startEmulatorServer({
    host: options.host,
    port: options.port,
    logger: options.logger,
    handleMetadata,
    control: {
      state: () => snapshot(),
      reset: (body) => {
        controlBody(schemas.empty, body);
        state.interruption = undefined;
        state.rebalance = undefined;
        state.scheduled = [];
        state.lifecycle = undefined;
        return snapshot();
      },
      interrupt: (body) => {
        const b = controlBody(schemas.interrupt, body);
        if (state.identity.lifecycle !== 'spot') throw new ControlError(409, 'this instance is on-demand: only spot instances get spot interruptions (set --lifecycle spot with the identity command)');
        const visibleAt = Date.now() + b.delay * 1000;
        state.interruption = { action: b.action, time: new Date(visibleAt + b.timeLeft * 1000), visibleAt };
        return { interruption: { action: b.action, time: isoSeconds(state.interruption.time), visibleAt: new Date(visibleAt).toISOString() } };
      },
      'clear-interruption': (body) => {
        controlBody(schemas.empty, body);
        state.interruption = undefined;
        return snapshot();
      },
      rebalance: (body) => {
        const b = controlBody(schemas.rebalance, body);
        const visibleAt = Date.now() + b.delay * 1000;
        state.rebalance = { noticeTime: new Date(visibleAt), visibleAt };
        return { rebalance: { noticeTime: isoSeconds(state.rebalance.noticeTime), visibleAt: new Date(visibleAt).toISOString() } };
      },
      schedule: (body) => {
        const b = controlBody(schemas.schedule, body);
        const visibleAt = Date.now() + b.delay * 1000;
        const notBefore = new Date(Math.floor((visibleAt + b.notBeforeIn * 1000) / 1000) * 1000);
        const event: ScheduledEvent = {
          EventId: b.eventId ?? `instance-event-${randomHex(9).slice(0, 17)}`,
          Code: b.code,
          Description: b.description ?? `scheduled ${b.code.replace('-', ' ')}`,
          NotBefore: notBefore,
          NotAfter: new Date(notBefore.getTime() + b.duration * 1000),
          NotBeforeDeadline: b.deadlineIn !== undefined ? new Date(visibleAt + b.deadlineIn * 1000) : undefined,
          State: 'active',
          visibleAt,
        };
        if (state.scheduled.some((e) => e.EventId === event.EventId)) throw new ControlError(409, `event ${event.EventId} already exists`);
        state.scheduled.push(event);
        return { event: renderEvent(event) };
      },
      'cancel-event': (body) => {
        const event = findEvent(controlBody(schemas.eventRef, body).eventId);
        event.State = 'canceled';
        return { event: renderEvent(event) };
      },
      'complete-event': (body) => {
        const event = findEvent(controlBody(schemas.eventRef, body).eventId);
        event.State = 'completed';
        return { event: renderEvent(event) };
      },
      lifecycle: (body) => {
        const b = controlBody(schemas.lifecycle, body);
        state.lifecycle = { state: b.state, visibleAt: Date.now() + b.delay * 1000 };
        return { lifecycle: { state: b.state, visibleAt: new Date(state.lifecycle.visibleAt).toISOString() } };
      },
      identity: (body) => {
        const b = controlBody(schemas.identity, body);
        Object.assign(state.identity, Object.fromEntries(Object.entries(b).filter(([, v]) => v !== undefined)));
        return { identity: state.identity };
      },
      config: (body) => {
        const b = controlBody(schemas.config, body);
        state.requireToken = b.requireToken;
        if (b.requireToken) state.tokens.clear();
        return { requireToken: state.requireToken };
      },
      'expire-tokens': (body) => {
        controlBody(schemas.empty, body);
        const count = state.tokens.size;
        state.tokens.clear();
        return { expired: count };
      },
    },
  });
  return server;
}

export const AWS_SIMULATE_COMMANDS: Record<string, string> = {
  interrupt: 'spot interruption: [--action terminate|stop|hibernate] [--delay S] [--time-left S (120)]',
  'clear-interruption': 'remove the spot interruption (as after a stop and start)',
  rebalance: 'rebalance recommendation: [--delay S]',
  schedule: 'scheduled event: [--code instance-stop|instance-reboot|system-reboot|system-maintenance|instance-retirement] [--not-before-in S] [--duration S] [--event-id ID]',
  'cancel-event': 'cancel a scheduled event: --event-id ID',
  'complete-event': 'mark a scheduled event completed: --event-id ID',
  lifecycle: 'Auto Scaling target lifecycle state: --state Terminated|InService|… [--delay S]',
  identity: 'change identity: [--instance-id i-…] [--instance-type T] [--zone Z] [--lifecycle spot|on-demand] [--hostname H]',
  config: 'IMDS options: --require-token true|false (IMDSv2 only)',
  'expire-tokens': 'invalidate every issued IMDSv2 token (clients must renew on 401)',
};
