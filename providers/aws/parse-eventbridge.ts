import { PayloadError } from '../../src/errors.js';
import type { Notice, NoticeAction, NoticeKind } from '../../src/notice.js';
import { asArray, asNonEmptyString, asObject, field, oneOf, optionalString, parseJson, type JsonObject } from '../../src/payload.js';
import type { ParseContext } from '../../src/provider.js';
import { INTERRUPTION_IDENTITY, REBALANCE_IDENTITY, asAwsTime, asInstanceId, awsNotice, instanceIdIn } from './parse-common.js';
import { SCHEDULED_EVENT_ACTIONS } from './parse-imds.js';

/**
 * One EventBridge event (the JSON a rule target receives): `{version, id, detail-type, source, account,
 * time, region, resources, detail}`. Handled types become notices; any other well-formed event is `[]`.
 */

/** EC2 emits the spot warning two minutes before it acts. */
const SPOT_WARNING_LEAD_MS = 120_000;

interface Envelope {
  id: string;
  detailType: string;
  source: string;
  time: Date;
  resources: string[];
  detail: JsonObject;
}

type EventHandler = (event: Envelope, ctx: ParseContext) => Notice[];

function readEnvelope(payload: string): Envelope {
  // Error paths are relative to the event, e.g. `detail.instance-id`.
  const doc = asObject(parseJson(payload, 'EventBridge event'), 'event');
  const id = asNonEmptyString(doc.id, 'id');
  const detailType = asNonEmptyString(doc['detail-type'], 'detail-type');
  const source = asNonEmptyString(doc.source, 'source');
  const time = asAwsTime(doc.time, 'time');
  optionalString(doc.version, 'version');
  optionalString(doc.account, 'account');
  optionalString(doc.region, 'region');
  const resources =
    doc.resources === undefined || doc.resources === null
      ? []
      : asArray(doc.resources, 'resources').map((r, i) => asNonEmptyString(r, `resources[${i}]`));
  const detail = asObject(doc.detail, 'detail');
  return { id, detailType, source, time, resources, detail };
}

const SPOT_ACTIONS = ['terminate', 'stop', 'hibernate'] as const satisfies readonly NoticeAction[];

/** "EC2 Spot Instance Interruption Warning": `detail {instance-id, instance-action}`; deadline = time + 120 s. */
const spotWarning: EventHandler = (ev, ctx) => {
  const instanceId = asInstanceId(ev.detail['instance-id'], 'detail.instance-id');
  const action = oneOf(ev.detail['instance-action'], SPOT_ACTIONS, 'detail.instance-action');
  return [
    awsNotice(
      {
        kind: 'interruption',
        action,
        instanceId,
        source: 'eventbridge',
        deadline: new Date(ev.time.getTime() + SPOT_WARNING_LEAD_MS),
        eventId: ev.id,
        identity: INTERRUPTION_IDENTITY,
      },
      ctx,
    ),
  ];
};

/** "EC2 Instance Rebalance Recommendation": `detail {instance-id}`; no deadline. */
const rebalance: EventHandler = (ev, ctx) => [
  awsNotice(
    {
      kind: 'rebalance',
      action: 'none',
      instanceId: asInstanceId(ev.detail['instance-id'], 'detail.instance-id'),
      source: 'eventbridge',
      eventId: ev.id,
      identity: REBALANCE_IDENTITY,
    },
    ctx,
  ),
];

const INSTANCE_STATES = ['pending', 'running', 'stopping', 'stopped', 'shutting-down', 'terminated'] as const;
const STATE_ACTIONS: Partial<Record<(typeof INSTANCE_STATES)[number], NoticeAction>> = {
  stopping: 'stop',
  'shutting-down': 'terminate',
  terminated: 'terminate',
};

/** "EC2 Instance State-change Notification": `detail {instance-id, state}`; only stopping / shutting-down / terminated. */
const stateChange: EventHandler = (ev, ctx) => {
  const instanceId = asInstanceId(ev.detail['instance-id'], 'detail.instance-id');
  const state = oneOf(ev.detail.state, INSTANCE_STATES, 'detail.state');
  const action = STATE_ACTIONS[state];
  if (!action) return [];
  return [
    awsNotice(
      {
        kind: 'interruption',
        action,
        instanceId,
        source: 'eventbridge',
        deadline: ev.time,
        eventId: ev.id,
        identity: INTERRUPTION_IDENTITY,
      },
      ctx,
    ),
  ];
};

/** Auto Scaling "EC2 Instance-terminate Lifecycle Action": `detail {EC2InstanceId, LifecycleActionToken, …}`; no deadline. */
const terminateLifecycleAction: EventHandler = (ev, ctx) => {
  for (const key of ['LifecycleActionToken', 'LifecycleHookName', 'AutoScalingGroupName', 'LifecycleTransition']) {
    optionalString(ev.detail[key], `detail.${key}`);
  }
  return [
    awsNotice(
      {
        kind: 'interruption',
        action: 'terminate',
        instanceId: asInstanceId(ev.detail.EC2InstanceId, 'detail.EC2InstanceId'),
        source: 'eventbridge',
        eventId: ev.id,
        identity: INTERRUPTION_IDENTITY,
      },
      ctx,
    ),
  ];
};

/**
 * AWS Health scheduled-change codes for EC2 instances, mapped to the action of the IMDS scheduled event
 * that describes the same maintenance (`SCHEDULED_EVENT_ACTIONS`), so both sources give one notice id.
 */
const HEALTH_EVENT_ACTIONS: ReadonlyMap<string, NoticeAction> = new Map([
  ['AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED', SCHEDULED_EVENT_ACTIONS['instance-reboot']],
  ['AWS_EC2_INSTANCE_REBOOT_FLEXIBLE_MAINTENANCE_SCHEDULED', SCHEDULED_EVENT_ACTIONS['instance-reboot']],
  ['AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED', SCHEDULED_EVENT_ACTIONS['system-reboot']],
  ['AWS_EC2_INSTANCE_STOP_SCHEDULED', SCHEDULED_EVENT_ACTIONS['instance-stop']],
  ['AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED', SCHEDULED_EVENT_ACTIONS['instance-retirement']],
  ['AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED', SCHEDULED_EVENT_ACTIONS['instance-retirement']],
  ['AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED', SCHEDULED_EVENT_ACTIONS['system-maintenance']],
  ['AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED', SCHEDULED_EVENT_ACTIONS['system-maintenance']],
]);

const HEALTH_STATUS = ['open', 'upcoming', 'closed'] as const;

/**
 * "AWS Health Event" for EC2 scheduled maintenance: one notice per affected instance (affectedEntities,
 * else resources); open / upcoming → maintenance, closed → cancelled; deadline = detail.startTime.
 * Identity: the start time, as for the IMDS scheduled event. Event id: detail.eventArn.
 */
const healthEvent: EventHandler = (ev, ctx) => {
  const service = field(ev.detail, 'service', 'detail');
  const code = field(ev.detail, 'eventTypeCode', 'detail');
  const action = service === 'EC2' ? HEALTH_EVENT_ACTIONS.get(code) : undefined;
  if (action === undefined) return [];
  const eventArn = field(ev.detail, 'eventArn', 'detail');
  const status = oneOf(ev.detail.statusCode, HEALTH_STATUS, 'detail.statusCode');
  const start = asAwsTime(ev.detail.startTime, 'detail.startTime');
  const kind: NoticeKind = status === 'closed' ? 'cancelled' : 'maintenance';

  const fromEntities =
    ev.detail.affectedEntities === undefined || ev.detail.affectedEntities === null
      ? []
      : asArray(ev.detail.affectedEntities, 'detail.affectedEntities').flatMap((value, i) => {
          const entity = asObject(value, `detail.affectedEntities[${i}]`);
          const id = instanceIdIn(asNonEmptyString(entity.entityValue, `detail.affectedEntities[${i}].entityValue`));
          return id ? [id] : [];
        });
  const instances = fromEntities.length > 0 ? fromEntities : ev.resources.flatMap((r) => instanceIdIn(r) ?? []);
  if (instances.length === 0) {
    throw new PayloadError(`detail.affectedEntities: ${code} names no EC2 instance id (neither in affectedEntities nor in resources)`);
  }
  return [...new Set(instances)].map((instanceId) =>
    awsNotice(
      { kind, action, instanceId, source: 'eventbridge', deadline: start, eventId: eventArn, identity: start.toISOString() },
      ctx,
    ),
  );
};

/** Handlers by `source` and `detail-type` (a Map: no lookup ever reaches Object.prototype). */
const HANDLERS: ReadonlyMap<string, EventHandler> = new Map([
  ['aws.ec2|EC2 Spot Instance Interruption Warning', spotWarning],
  ['aws.ec2|EC2 Instance Rebalance Recommendation', rebalance],
  ['aws.ec2|EC2 Instance State-change Notification', stateChange],
  ['aws.autoscaling|EC2 Instance-terminate Lifecycle Action', terminateLifecycleAction],
  ['aws.health|AWS Health Event', healthEvent],
]);

export function parseEventBridge(payload: string, ctx: ParseContext): Notice[] {
  const ev = readEnvelope(payload);
  const handler = HANDLERS.get(`${ev.source}|${ev.detailType}`);
  return handler ? handler(ev, ctx) : [];
}
