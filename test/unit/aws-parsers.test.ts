import { readFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { parseCli, type ParseOptions } from '../support/in-process-cli.js';

/**
 * The AWS parsers, through the CLI contract: `spotwatch parse --source S` reads one payload on stdin, prints
 * one Notice per line and exits 0, or exits 2 with one line on stderr naming what is wrong.
 */

const INSTANCE = 'i-1234567890abcdef0';
const NOW = '2017-09-18T08:20:05.000Z';

function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/aws/${name}`, import.meta.url), 'utf8');
}

const { parse, one, none } = parseCli({ now: NOW, instanceId: INSTANCE, viaMain: true });

/** Parses a malformed payload: exit 2, one stderr line that contains `expected`, nothing on stdout. */
async function rejected(source: string, payload: string | Buffer, expected: string, options: ParseOptions = {}): Promise<string> {
  const result = await parse(source, payload, options);
  expect(result.code).toBe(2);
  expect(result.stdout).toBe('');
  expect(result.stderr.endsWith('\n')).toBe(true);
  expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(result.stderr).toContain(expected);
  return result.stderr;
}

function event(detailType: string, source: string, detail: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    version: '0',
    id: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
    'detail-type': detailType,
    source,
    account: '123456789012',
    time: '2024-05-01T10:00:00Z',
    region: 'us-east-1',
    resources: [],
    detail,
    ...extra,
  });
}

describe('aws-instance-action (IMDS spot/instance-action)', () => {
  it('turns the documented terminate document into an interruption with the action time as deadline', async () => {
    const n = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'));
    expect(n).toMatchObject({
      provider: 'aws',
      kind: 'interruption',
      action: 'terminate',
      instanceId: INSTANCE,
      deadline: '2017-09-18T08:22:00.000Z',
      detectedAt: NOW,
      source: 'imds',
    });
    expect(n.id).toMatch(/^aws-[0-9a-f]{24}$/);
    expect(n.eventId).toBeUndefined();
  });

  it('keeps stop and hibernate as the action, with ids distinct from terminate', async () => {
    const stop = await one('aws-instance-action', fixture('imds-instance-action-stop.json'));
    const hibernate = await one('aws-instance-action', '{"action": "hibernate", "time": "2017-09-18T08:20:00Z"}');
    const terminate = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'));
    expect(stop.action).toBe('stop');
    expect(hibernate.action).toBe('hibernate');
    expect(hibernate.deadline).toBe('2017-09-18T08:20:00.000Z');
    expect(new Set([stop.id, hibernate.id, terminate.id]).size).toBe(3);
  });

  it('gives the same id when seen again later (restart) and a different one for another instance', async () => {
    const first = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'));
    const again = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'), { now: '2017-09-18T08:21:00Z' });
    const other = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'), { instanceId: 'i-0fedcba9876543210' });
    expect(again.id).toBe(first.id);
    expect(again.detectedAt).toBe('2017-09-18T08:21:00.000Z');
    expect(other.id).not.toBe(first.id);
  });

  it('reads the IMDS 404 page, "Not Found" text and an empty body as no notice', async () => {
    await none('aws-instance-action', fixture('imds-not-found.html'));
    await none('aws-instance-action', 'Not Found');
    await none('aws-instance-action', '404 - Not Found\n');
    await none('aws-instance-action', '');
    await none('aws-instance-action', '  \n');
    // No notice needs no instance id.
    await none('aws-instance-action', fixture('imds-not-found.html'), { instanceId: null });
  });

  it('requires --instance-id when there is a notice', async () => {
    await rejected('aws-instance-action', fixture('imds-instance-action-terminate.json'), '--instance-id is required for aws-instance-action', {
      instanceId: null,
    });
  });

  it('rejects malformed documents, naming the field', async () => {
    const s = 'aws-instance-action';
    await rejected(s, '{"action": 5, "time": "2017-09-18T08:22:00Z"}', 'instance-action.action: expected a string, got number');
    await rejected(s, '{"action": "reboot", "time": "2017-09-18T08:22:00Z"}', 'instance-action.action: "reboot" is not one of terminate, stop, hibernate');
    await rejected(s, '{"time": "2017-09-18T08:22:00Z"}', 'instance-action.action: expected a string, got undefined');
    await rejected(s, '{"action": "terminate", "time": "soon"}', 'instance-action.time: "soon" is not a valid time');
    await rejected(s, '{"action": "terminate", "time": "1"}', 'instance-action.time: "1" is not a valid time');
    await rejected(s, '{"action": "terminate", "time": "2017-09-18T08:22:00"}', 'instance-action.time');
    await rejected(s, '{"action": "terminate", "time": "2017-13-45T08:22:00Z"}', 'instance-action.time');
    await rejected(s, '{"action": "terminate"}', 'instance-action.time: expected a string, got undefined');
    await rejected(s, '{"action": "terminate", "time": ', 'spot/instance-action: not valid JSON');
    await rejected(s, '[{"action": "terminate", "time": "2017-09-18T08:22:00Z"}]', 'instance-action: expected an object, got array');
    await rejected(s, 'null', 'instance-action: expected an object, got null');
  });

  it('never reads an error page other than 404 as "no notice"', async () => {
    const stderr = await rejected('aws-instance-action', fixture('imds-unauthorized.html'), 'spot/instance-action: got an HTML page');
    expect(stderr).toContain('401 - Unauthorized');
  });

  it('ignores unknown extra fields', async () => {
    const n = await one('aws-instance-action', '{"action": "stop", "time": "2017-09-18T08:22:00Z", "future": {"x": [1, 2]}}');
    expect(n.action).toBe('stop');
  });
});

describe('aws-rebalance (IMDS events/recommendations/rebalance)', () => {
  it('turns the documented document into a rebalance without deadline', async () => {
    const n = await one('aws-rebalance', fixture('imds-rebalance.json'));
    expect(n).toMatchObject({ provider: 'aws', kind: 'rebalance', action: 'none', instanceId: INSTANCE, source: 'imds', detectedAt: NOW });
    expect(n.deadline).toBeUndefined();
    expect(n.eventId).toBeUndefined();
  });

  it('reads the 404 page as no notice', async () => {
    await none('aws-rebalance', fixture('imds-not-found.html'));
    await none('aws-rebalance', '');
  });

  it('rejects malformed documents, naming the field', async () => {
    await rejected('aws-rebalance', '{}', 'rebalance.noticeTime: expected a string, got undefined');
    await rejected('aws-rebalance', '{"noticeTime": 1603786920}', 'rebalance.noticeTime: expected a string, got number');
    await rejected('aws-rebalance', '{"noticeTime": "yesterday"}', 'rebalance.noticeTime: "yesterday" is not a valid time');
    await rejected('aws-rebalance', '["2020-10-27T08:22:00Z"]', 'rebalance: expected an object, got array');
    await rejected('aws-rebalance', fixture('imds-rebalance.json'), '--instance-id is required for aws-rebalance', { instanceId: null });
  });
});

describe('aws-scheduled-events (IMDS events/maintenance/scheduled)', () => {
  it('turns an active event into maintenance with NotBefore as deadline and the event id', async () => {
    const n = await one('aws-scheduled-events', fixture('imds-scheduled-events-active.json'));
    expect(n).toMatchObject({
      provider: 'aws',
      kind: 'maintenance',
      action: 'reboot',
      instanceId: INSTANCE,
      deadline: '2019-01-21T09:00:43.000Z',
      eventId: 'instance-event-0d59937288b749b32',
      source: 'imds',
    });
  });

  it('accepts the documented NotBeforeDeadline field', async () => {
    const n = await one('aws-scheduled-events', fixture('imds-scheduled-events-deadline.json'));
    expect(n.deadline).toBe('2023-01-21T09:00:43.000Z');
    expect(n.kind).toBe('maintenance');
  });

  it('turns canceled and completed events into cancellations of the same action and event id', async () => {
    const active = await one('aws-scheduled-events', fixture('imds-scheduled-events-active.json'));
    const canceled = await one('aws-scheduled-events', fixture('imds-scheduled-events-canceled.json'));
    expect(canceled).toMatchObject({ kind: 'cancelled', action: 'reboot', eventId: active.eventId, deadline: active.deadline });
    expect(canceled.id).not.toBe(active.id);

    const completed = await one('aws-scheduled-events', fixture('imds-scheduled-events-completed.json'));
    expect(completed).toMatchObject({ kind: 'cancelled', action: 'terminate', eventId: 'instance-event-0e439355b779n26' });
  });

  it('lets State decide, not the description prefix', async () => {
    const doc = JSON.parse(fixture('imds-scheduled-events-canceled.json')) as Record<string, unknown>[];
    doc[0]!.State = 'active';
    const n = await one('aws-scheduled-events', JSON.stringify(doc));
    expect(n.kind).toBe('maintenance');
  });

  it('maps every documented code to its action', async () => {
    const codes: Record<string, string> = {
      'instance-reboot': 'reboot',
      'system-reboot': 'reboot',
      'instance-stop': 'stop',
      'instance-retirement': 'terminate',
      'system-maintenance': 'none',
    };
    const items = Object.keys(codes).map((code, i) => ({
      NotBefore: `2${i} Jan 2019 09:00:43 GMT`,
      Code: code,
      Description: 'scheduled',
      EventId: `instance-event-${i}`,
      NotAfter: `2${i} Jan 2019 09:17:23 GMT`,
      State: 'active',
    }));
    const result = await parse('aws-scheduled-events', JSON.stringify(items));
    expect(result.code).toBe(0);
    expect(result.notices.map((n) => [n.eventId, n.action, n.deadline])).toEqual(
      Object.values(codes).map((action, i) => [`instance-event-${i}`, action, `2019-01-2${i}T09:00:43.000Z`]),
    );
    expect(new Set(result.notices.map((n) => n.id)).size).toBe(5);
  });

  it('reads [] as no notice, and needs no instance id for it', async () => {
    await none('aws-scheduled-events', fixture('imds-scheduled-events-empty.json'), { instanceId: null });
  });

  it('rejects malformed documents, naming the field', async () => {
    const s = 'aws-scheduled-events';
    const item = JSON.parse(fixture('imds-scheduled-events-active.json'))[0] as Record<string, unknown>;
    const withItem = (patch: Record<string, unknown>): string => JSON.stringify([{ ...item, ...patch }]);
    await rejected(s, withItem({ Code: 'instance-explode' }), 'scheduled[0].Code: "instance-explode" is not one of instance-reboot');
    await rejected(s, withItem({ Code: 'constructor' }), 'scheduled[0].Code: "constructor" is not one of');
    await rejected(s, withItem({ State: 'pending' }), 'scheduled[0].State: "pending" is not one of active, completed, canceled');
    await rejected(s, withItem({ NotBefore: 'next week' }), 'scheduled[0].NotBefore: "next week" is not a valid time');
    await rejected(s, withItem({ NotBefore: undefined }), 'scheduled[0].NotBefore: expected a string, got undefined');
    await rejected(s, withItem({ NotAfter: 7 }), 'scheduled[0].NotAfter: expected a string, got number');
    await rejected(s, withItem({ EventId: ['x'] }), 'scheduled[0].EventId: expected a string, got array');
    await rejected(s, JSON.stringify([item, 'system-reboot']), 'scheduled[1]: expected an object, got string');
    await rejected(s, JSON.stringify(item), 'scheduled: expected an array, got object');
    await rejected(s, '', 'events/maintenance/scheduled: empty body');
    await rejected(s, fixture('imds-scheduled-events-active.json'), '--instance-id is required for aws-scheduled-events', { instanceId: null });
  });
});

describe('aws-target-lifecycle (IMDS autoscaling/target-lifecycle-state)', () => {
  it('reads Terminated as an interruption to terminate, without deadline', async () => {
    const n = await one('aws-target-lifecycle', fixture('imds-target-lifecycle-terminated.txt'));
    expect(n).toMatchObject({ kind: 'interruption', action: 'terminate', instanceId: INSTANCE, source: 'imds' });
    expect(n.deadline).toBeUndefined();
  });

  it('reads the other states and the 404 page as no notice', async () => {
    await none('aws-target-lifecycle', fixture('imds-target-lifecycle-inservice.txt'));
    await none('aws-target-lifecycle', fixture('imds-target-lifecycle-warmed-stopped.txt'));
    for (const state of ['Pending', 'Standby', 'Detached', 'Warmed:Running', 'Warmed:Hibernated', 'InService\n']) {
      await none('aws-target-lifecycle', state);
    }
    await none('aws-target-lifecycle', fixture('imds-not-found.html'));
  });

  it('rejects unknown states and a Terminated without instance id', async () => {
    await rejected('aws-target-lifecycle', 'Exploding', 'target-lifecycle-state: "Exploding" is not a lifecycle state');
    await rejected('aws-target-lifecycle', '{"state": "Terminated"}', 'target-lifecycle-state: "{"state": "Terminated"}" is not a lifecycle state');
    await rejected('aws-target-lifecycle', 'Terminated', '--instance-id is required for aws-target-lifecycle', { instanceId: null });
  });
});

describe('eventbridge', () => {
  it('turns the documented spot interruption warning into an interruption due 120 s after the event time', async () => {
    const n = await one('eventbridge', fixture('eventbridge-spot-interruption-warning.json'), { instanceId: null });
    expect(n).toMatchObject({
      provider: 'aws',
      kind: 'interruption',
      action: 'terminate',
      instanceId: INSTANCE,
      deadline: '2017-09-18T08:22:00.000Z',
      detectedAt: NOW,
      source: 'eventbridge',
      eventId: '12345678-1234-1234-1234-123456789012',
    });
  });

  it('keeps the spot warning action (stop, hibernate)', async () => {
    for (const action of ['stop', 'hibernate'] as const) {
      const n = await one('eventbridge', event('EC2 Spot Instance Interruption Warning', 'aws.ec2', { 'instance-id': INSTANCE, 'instance-action': action }));
      expect(n.action).toBe(action);
      expect(n.deadline).toBe('2024-05-01T10:02:00.000Z');
    }
  });

  it('turns the documented rebalance recommendation into a rebalance', async () => {
    const n = await one('eventbridge', fixture('eventbridge-rebalance-recommendation.json'));
    expect(n).toMatchObject({ kind: 'rebalance', action: 'none', instanceId: INSTANCE, source: 'eventbridge', eventId: '12345678-1234-1234-1234-123456789012' });
    expect(n.deadline).toBeUndefined();
  });

  it('turns state changes to stopping / shutting-down / terminated into interruptions due at the event time', async () => {
    const down = await one('eventbridge', fixture('eventbridge-state-change-shutting-down.json'));
    expect(down).toMatchObject({
      kind: 'interruption',
      action: 'terminate',
      instanceId: 'i-abcd1111',
      deadline: '2021-11-11T21:31:02.000Z',
      eventId: '7bf73129-1428-4cd3-a780-95db273d1603',
    });
    const stopping = await one('eventbridge', event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': 'i-abcd1111', state: 'stopping' }));
    expect(stopping).toMatchObject({ kind: 'interruption', action: 'stop', deadline: '2024-05-01T10:00:00.000Z' });
    const terminated = await one('eventbridge', event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': 'i-abcd1111', state: 'terminated' }));
    expect(terminated.action).toBe('terminate');
    expect(terminated.id).toBe(down.id);
  });

  it('reads the other state changes as no notice', async () => {
    await none('eventbridge', fixture('eventbridge-state-change-pending.json'));
    for (const state of ['running', 'stopped']) {
      await none('eventbridge', event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': 'i-abcd1111', state }));
    }
  });

  it('turns the documented Auto Scaling terminate lifecycle action into an interruption without deadline', async () => {
    const n = await one('eventbridge', fixture('eventbridge-asg-terminate-lifecycle-action.json'));
    expect(n).toMatchObject({
      kind: 'interruption',
      action: 'terminate',
      instanceId: 'i-12345678',
      source: 'eventbridge',
      eventId: '468fe059-f4b7-445f-bb22-2a5e6a9c9ef2',
    });
    expect(n.deadline).toBeUndefined();
  });

  it('turns an EC2 scheduled-maintenance Health event into maintenance due at startTime, event id = eventArn', async () => {
    const n = await one('eventbridge', fixture('eventbridge-health-scheduled-reboot.json'));
    expect(n).toMatchObject({
      kind: 'maintenance',
      action: 'reboot',
      instanceId: INSTANCE,
      deadline: '2019-01-21T09:00:43.000Z',
      source: 'eventbridge',
      eventId:
        'arn:aws:health:us-east-1::event/EC2/AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED/AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED_ABC123-DEF456',
    });
  });

  it('maps Health codes and statuses, one notice per affected instance', async () => {
    const health = JSON.parse(fixture('eventbridge-health-scheduled-reboot.json')) as { detail: Record<string, unknown>; resources: string[] };
    const variant = (detail: Record<string, unknown>, resources = health.resources): string =>
      JSON.stringify({ ...health, resources, detail: { ...health.detail, ...detail } });

    const cases: [string, string][] = [
      ['AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED', 'reboot'],
      ['AWS_EC2_INSTANCE_STOP_SCHEDULED', 'stop'],
      ['AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED', 'terminate'],
      ['AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED', 'terminate'],
      ['AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED', 'none'],
    ];
    for (const [code, action] of cases) {
      const n = await one('eventbridge', variant({ eventTypeCode: code }));
      expect([code, n.kind, n.action]).toEqual([code, 'maintenance', action]);
    }

    const closed = await one('eventbridge', variant({ statusCode: 'closed' }));
    expect(closed).toMatchObject({ kind: 'cancelled', action: 'reboot', deadline: '2019-01-21T09:00:43.000Z' });

    const two = await parse(
      'eventbridge',
      variant({
        affectedEntities: [
          { entityValue: 'i-0aaaaaaaaaaaaaaa1' },
          { entityValue: 'vol-0123456789abcdef0' },
          { entityValue: 'i-0aaaaaaaaaaaaaaa2' },
          { entityValue: 'i-0aaaaaaaaaaaaaaa1' },
        ],
      }),
    );
    expect(two.code).toBe(0);
    expect(two.notices.map((n) => n.instanceId)).toEqual(['i-0aaaaaaaaaaaaaaa1', 'i-0aaaaaaaaaaaaaaa2']);

    // Without instance entities, the instances in `resources` (ids or ARNs).
    const fromResources = await one(
      'eventbridge',
      variant({ affectedEntities: [] }, ['arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbb1']),
    );
    expect(fromResources.instanceId).toBe('i-0bbbbbbbbbbbbbbb1');

    await none('eventbridge', variant({ service: 'RDS' }));
    await none('eventbridge', variant({ eventTypeCode: 'AWS_EC2_OPERATIONAL_ISSUE' }));
  });

  it('reads well-formed events of other types as no notice', async () => {
    await none('eventbridge', fixture('eventbridge-health-odcr-underutilization.json'));
    await none('eventbridge', event('EC2 Instance Launch Successful', 'aws.autoscaling', { EC2InstanceId: 'i-12345678' }));
    await none('eventbridge', event('AWS API Call via CloudTrail', 'aws.ec2', { eventName: 'TerminateInstances' }));
    // A detail-type only means something together with its AWS source.
    await none('eventbridge', event('EC2 Spot Instance Interruption Warning', 'my.app', { 'instance-id': INSTANCE, 'instance-action': 'terminate' }));
    await none('eventbridge', event('__proto__', 'aws.ec2', {}));
    await none('eventbridge', event('constructor', 'toString', {}));
  });

  it('rejects malformed events, naming the field', async () => {
    const spot = JSON.parse(fixture('eventbridge-spot-interruption-warning.json')) as Record<string, unknown>;
    const variant = (patch: Record<string, unknown>): string => JSON.stringify({ ...spot, ...patch });
    const s = 'eventbridge';
    await rejected(s, '{"version": "0", ', 'EventBridge event: not valid JSON');
    await rejected(s, JSON.stringify([spot]), 'event: expected an object, got array');
    await rejected(s, variant({ detail: undefined }), 'detail: expected an object, got undefined');
    await rejected(s, variant({ detail: [] }), 'detail: expected an object, got array');
    await rejected(s, variant({ 'detail-type': undefined }), 'detail-type: expected a string, got undefined');
    await rejected(s, variant({ id: 42 }), 'id: expected a string, got number');
    await rejected(s, variant({ time: 'yyyy-mm-ddThh:mm:ssZ' }), 'time: "yyyy-mm-ddThh:mm:ssZ" is not a valid time');
    await rejected(s, variant({ resources: 'i-1234567890abcdef0' }), 'resources: expected an array, got string');
    await rejected(s, variant({ detail: { 'instance-id': 5, 'instance-action': 'terminate' } }), 'detail.instance-id: expected a string, got number');
    await rejected(s, variant({ detail: { 'instance-id': 'web-1', 'instance-action': 'terminate' } }), 'detail.instance-id: "web-1" is not an EC2 instance id');
    await rejected(s, variant({ detail: { 'instance-action': 'terminate' } }), 'detail.instance-id: expected a string, got undefined');
    await rejected(s, variant({ detail: { 'instance-id': INSTANCE, 'instance-action': 'action' } }), 'detail.instance-action: "action" is not one of terminate, stop, hibernate');
    await rejected(s, event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': INSTANCE, state: 'exploded' }), 'detail.state: "exploded" is not one of');
    await rejected(s, event('EC2 Instance-terminate Lifecycle Action', 'aws.autoscaling', { LifecycleHookName: 'h' }), 'detail.EC2InstanceId: expected a string, got undefined');

    const health = JSON.parse(fixture('eventbridge-health-scheduled-reboot.json')) as { detail: Record<string, unknown> };
    const healthVariant = (detail: Record<string, unknown>, top: Record<string, unknown> = {}): string =>
      JSON.stringify({ ...health, ...top, detail: { ...health.detail, ...detail } });
    await rejected(s, healthVariant({ startTime: undefined }), 'detail.startTime: expected a string, got undefined');
    await rejected(s, healthVariant({ statusCode: 'pending' }), 'detail.statusCode: "pending" is not one of open, upcoming, closed');
    await rejected(s, healthVariant({ eventArn: '' }), 'detail.eventArn: must not be empty');
    await rejected(s, healthVariant({ affectedEntities: [{ entityValue: 3 }] }), 'detail.affectedEntities[0].entityValue: expected a string, got number');
    await rejected(s, healthVariant({ affectedEntities: [] }, { resources: [] }), 'detail.affectedEntities: AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED names no EC2 instance id');
  });
});

describe('notice identity across sources', () => {
  it('gives the IMDS instance-action and the EventBridge spot warning for one instance the same id', async () => {
    const imds = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'));
    const bridge = await one('eventbridge', fixture('eventbridge-spot-interruption-warning.json'));
    expect(imds.source).toBe('imds');
    expect(bridge.source).toBe('eventbridge');
    expect(bridge.id).toBe(imds.id);

    // Deadlines that differ between sources do not split the episode.
    const later = await one('aws-instance-action', '{"action": "terminate", "time": "2017-09-18T08:22:07Z"}');
    expect(later.id).toBe(imds.id);

    // Every other terminate signal for that instance is the same episode.
    const stateChange = await one(
      'eventbridge',
      event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': INSTANCE, state: 'shutting-down' }),
    );
    const lifecycle = await one('eventbridge', event('EC2 Instance-terminate Lifecycle Action', 'aws.autoscaling', { EC2InstanceId: INSTANCE }));
    const asgImds = await one('aws-target-lifecycle', 'Terminated');
    expect([stateChange.id, lifecycle.id, asgImds.id]).toEqual([imds.id, imds.id, imds.id]);
  });

  it('gives the spot stop from IMDS and from EventBridge the same id, distinct from terminate', async () => {
    const imds = await one('aws-instance-action', fixture('imds-instance-action-stop.json'));
    const bridge = await one('eventbridge', event('EC2 Spot Instance Interruption Warning', 'aws.ec2', { 'instance-id': INSTANCE, 'instance-action': 'stop' }));
    const terminate = await one('aws-instance-action', fixture('imds-instance-action-terminate.json'));
    expect(bridge.id).toBe(imds.id);
    expect(terminate.id).not.toBe(imds.id);
  });

  it('gives the IMDS and EventBridge rebalance recommendations the same id', async () => {
    const imds = await one('aws-rebalance', fixture('imds-rebalance.json'));
    const bridge = await one('eventbridge', fixture('eventbridge-rebalance-recommendation.json'));
    expect(bridge.id).toBe(imds.id);
  });

  it('gives an IMDS scheduled event and the Health event with the same start time the same id', async () => {
    const imds = await one('aws-scheduled-events', fixture('imds-scheduled-events-active.json'));
    const health = await one('eventbridge', fixture('eventbridge-health-scheduled-reboot.json'));
    expect(imds.eventId).not.toBe(health.eventId);
    expect(health.deadline).toBe(imds.deadline);
    expect(health.id).toBe(imds.id);

    // Their cancellations match each other too, and differ from the maintenance notice.
    const healthDoc = JSON.parse(fixture('eventbridge-health-scheduled-reboot.json')) as { detail: Record<string, unknown> };
    const closed = await one('eventbridge', JSON.stringify({ ...healthDoc, detail: { ...healthDoc.detail, statusCode: 'closed' } }));
    const canceled = await one('aws-scheduled-events', fixture('imds-scheduled-events-canceled.json'));
    expect(closed.id).toBe(canceled.id);
    expect(closed.id).not.toBe(imds.id);

    // A different start time is a different maintenance.
    const moved = await one('eventbridge', JSON.stringify({ ...healthDoc, detail: { ...healthDoc.detail, startTime: 'Tue, 22 Jan 2019 09:00:43 GMT' } }));
    expect(moved.id).not.toBe(imds.id);
  });
});

describe('hostile input', () => {
  it('refuses payloads over 1 MiB with exit 2', async () => {
    const big = Buffer.alloc(1024 * 1024 + 1, 0x20);
    for (const source of ['aws-instance-action', 'eventbridge']) {
      await rejected(source, big, 'payload is larger than 1048576 bytes');
    }
  });

  it('survives deeply nested JSON', async () => {
    const depth = 200_000;
    const nested = '['.repeat(depth) + ']'.repeat(depth);
    await rejected('eventbridge', nested, 'event: expected an object, got array');
    await rejected('aws-scheduled-events', nested, 'scheduled[0]: expected an object, got array');
    await rejected('eventbridge', event('EC2 Spot Instance Interruption Warning', 'aws.ec2', null).replace('"detail":null', `"detail":${nested}`), 'detail: expected an object, got array');
    const objects = '{"a":'.repeat(depth / 2) + '1' + '}'.repeat(depth / 2);
    await rejected('aws-instance-action', objects, 'instance-action.action: expected a string, got undefined');
  });

  it('truncates huge strings in its one-line error', async () => {
    const huge = 'i-' + 'f'.repeat(900_000);
    const stderr = await rejected(
      'eventbridge',
      event('EC2 Spot Instance Interruption Warning', 'aws.ec2', { 'instance-id': huge, 'instance-action': 'terminate' }),
      'detail.instance-id:',
    );
    expect(stderr.length).toBeLessThan(400);
    const stderr2 = await rejected('aws-target-lifecycle', 'Warmed:' + 'x'.repeat(900_000) + '!', 'target-lifecycle-state:');
    expect(stderr2.length).toBeLessThan(400);
    const stderr3 = await rejected('aws-instance-action', JSON.stringify({ action: 'x'.repeat(900_000), time: '2017-09-18T08:22:00Z' }), 'instance-action.action:');
    expect(stderr3.length).toBeLessThan(400);
  });

  it('does not read or pollute prototypes through __proto__ and friends', async () => {
    await rejected('aws-instance-action', '{"__proto__": {"action": "terminate", "time": "2017-09-18T08:22:00Z"}}', 'instance-action.action: expected a string, got undefined');
    await rejected(
      'eventbridge',
      event('EC2 Spot Instance Interruption Warning', 'aws.ec2', null).replace(
        '"detail":null',
        `"detail":{"__proto__":{"instance-id":"${INSTANCE}","instance-action":"terminate"}}`,
      ),
      'detail.instance-id: expected a string, got undefined',
    );
    await rejected('eventbridge', '{"__proto__": {"id": "x", "detail-type": "EC2 Instance Rebalance Recommendation"}}', 'id: expected a string, got undefined');
    await rejected(
      'aws-scheduled-events',
      '[{"__proto__": {"Code": "system-reboot"}, "State": "active", "NotBefore": "21 Jan 2019 09:00:43 GMT"}]',
      'scheduled[0].Code: expected a string, got undefined',
    );
    await rejected('eventbridge', event('EC2 Instance State-change Notification', 'aws.ec2', { 'instance-id': INSTANCE, state: 'toString' }), 'detail.state: "toString" is not one of');
    const probe: Record<string, unknown> = {};
    expect([probe.action, probe.id, probe['instance-id'], probe.Code]).toEqual([undefined, undefined, undefined, undefined]);
  });
});
