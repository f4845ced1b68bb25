import { PayloadError } from '../../src/errors.js';
import type { Notice, NoticeAction } from '../../src/notice.js';
import { asArray, asObject, oneOf, optionalString, truncate } from '../../src/payload.js';
import type { ParseContext } from '../../src/provider.js';
import {
  INTERRUPTION_IDENTITY,
  REBALANCE_IDENTITY,
  asAwsTime,
  awsNotice,
  contextInstanceId,
  isNotFoundPage,
  optionalAwsTime,
  parseImdsJson,
} from './parse-common.js';

/**
 * Parsers for the instance metadata (IMDS) documents a node polls. None of them names the instance, so
 * every notice takes its instance id from the context (`--instance-id`).
 */

const SPOT_ACTIONS = ['terminate', 'stop', 'hibernate'] as const satisfies readonly NoticeAction[];

/** `latest/meta-data/spot/instance-action`: `{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`; 404 until one is scheduled. */
export function parseInstanceAction(payload: string, ctx: ParseContext): Notice[] {
  if (payload.trim() === '' || isNotFoundPage(payload)) return [];
  const doc = asObject(parseImdsJson(payload, 'spot/instance-action'), 'instance-action');
  const action = oneOf(doc.action, SPOT_ACTIONS, 'instance-action.action');
  const time = asAwsTime(doc.time, 'instance-action.time');
  return [
    awsNotice(
      {
        kind: 'interruption',
        action,
        instanceId: contextInstanceId(ctx, 'aws-instance-action'),
        source: 'imds',
        deadline: time,
        identity: INTERRUPTION_IDENTITY,
      },
      ctx,
    ),
  ];
}

/** `latest/meta-data/events/recommendations/rebalance`: `{"noticeTime": "2020-10-27T08:22:00Z"}`; 404 until one is issued. */
export function parseRebalance(payload: string, ctx: ParseContext): Notice[] {
  if (payload.trim() === '' || isNotFoundPage(payload)) return [];
  const doc = asObject(parseImdsJson(payload, 'events/recommendations/rebalance'), 'rebalance');
  asAwsTime(doc.noticeTime, 'rebalance.noticeTime');
  return [
    awsNotice(
      {
        kind: 'rebalance',
        action: 'none',
        instanceId: contextInstanceId(ctx, 'aws-rebalance'),
        source: 'imds',
        identity: REBALANCE_IDENTITY,
      },
      ctx,
    ),
  ];
}

const EVENT_CODES = ['instance-reboot', 'system-reboot', 'system-maintenance', 'instance-retirement', 'instance-stop'] as const;
type EventCode = (typeof EVENT_CODES)[number];

/** What EC2 does to the instance at a scheduled event's start (shared with the Health event mapping). */
export const SCHEDULED_EVENT_ACTIONS: Readonly<Record<EventCode, NoticeAction>> = {
  'instance-reboot': 'reboot',
  'system-reboot': 'reboot',
  'instance-stop': 'stop',
  'instance-retirement': 'terminate',
  'system-maintenance': 'none',
};

const EVENT_STATES = ['active', 'completed', 'canceled'] as const;

/**
 * `latest/meta-data/events/maintenance/scheduled`: a JSON array (`[]` when nothing is scheduled) of
 * `{NotBefore, Code, Description, EventId, NotAfter, State[, NotBeforeDeadline]}`, times like
 * `21 Jan 2019 09:00:43 GMT`. `State` decides (the description may also carry a `[Canceled]` prefix).
 *
 * Identity: the scheduled start (NotBefore), which AWS Health reports as the same event's startTime; the
 * two sources' event ids differ.
 */
export function parseScheduledEvents(payload: string, ctx: ParseContext): Notice[] {
  if (isNotFoundPage(payload)) return [];
  const items = asArray(parseImdsJson(payload, 'events/maintenance/scheduled'), 'scheduled');
  const notices: Notice[] = [];
  items.forEach((value, i) => {
    const path = `scheduled[${i}]`;
    const item = asObject(value, path);
    const code = oneOf(item.Code, EVENT_CODES, `${path}.Code`);
    const state = oneOf(item.State, EVENT_STATES, `${path}.State`);
    const notBefore = asAwsTime(item.NotBefore, `${path}.NotBefore`);
    optionalAwsTime(item.NotAfter, `${path}.NotAfter`);
    optionalAwsTime(item.NotBeforeDeadline, `${path}.NotBeforeDeadline`);
    optionalString(item.Description, `${path}.Description`);
    const eventId = optionalString(item.EventId, `${path}.EventId`);
    if (eventId !== undefined && eventId.trim() === '') throw new PayloadError(`${path}.EventId: must not be empty`);
    notices.push(
      awsNotice(
        {
          kind: state === 'active' ? 'maintenance' : 'cancelled',
          action: SCHEDULED_EVENT_ACTIONS[code],
          instanceId: contextInstanceId(ctx, 'aws-scheduled-events'),
          source: 'imds',
          deadline: notBefore,
          eventId,
          identity: notBefore.toISOString(),
        },
        ctx,
      ),
    );
  });
  return notices;
}

const QUIET_LIFECYCLE_STATES = new Set(['InService', 'Pending', 'Standby', 'Detached']);
const WARMED_STATE = /^Warmed:[A-Za-z]+$/;

/**
 * `latest/meta-data/autoscaling/target-lifecycle-state`: plain text, the Auto Scaling state the instance
 * is moving to. Only `Terminated` is a notice; 404 (no transition yet) and the other states are not.
 */
export function parseTargetLifecycle(payload: string, ctx: ParseContext): Notice[] {
  if (payload.trim() === '' || isNotFoundPage(payload)) return [];
  const state = payload.trim();
  if (state === 'Terminated') {
    return [
      awsNotice(
        {
          kind: 'interruption',
          action: 'terminate',
          instanceId: contextInstanceId(ctx, 'aws-target-lifecycle'),
          source: 'imds',
          identity: INTERRUPTION_IDENTITY,
        },
        ctx,
      ),
    ];
  }
  if (QUIET_LIFECYCLE_STATES.has(state) || WARMED_STATE.test(state)) return [];
  throw new PayloadError(
    `target-lifecycle-state: "${truncate(state)}" is not a lifecycle state (InService, Pending, Standby, Detached, Terminated, Warmed:*)`,
  );
}
