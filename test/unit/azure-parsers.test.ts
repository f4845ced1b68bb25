import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { resourceNameFromCompute } from '../../providers/azure/parsers.js';
import { DELETE, edit, parseCli } from '../support/in-process-cli.js';

/**
 * The Azure parsers through the CLI contract (`spotwatch parse --source S`): one Notice per line and exit 0,
 * or exit 2 with one stderr line naming the field.
 */

const VM = 'vmss_3';
const NOW = '2016-09-19T18:29:20.000Z';
const PREEMPT_ID = 'C7061BAC-AFDC-4513-B24B-AA5F13A16123';

function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/azure/${name}`, import.meta.url), 'utf8');
}

const { ok, malformed } = parseCli({ now: NOW, instanceId: VM });

function withEvent(change: (ev: Record<string, unknown>) => void): string {
  const doc = JSON.parse(fixture('scheduled-events.json')) as { Events: Record<string, unknown>[] };
  change(doc.Events[0]!);
  return JSON.stringify(doc);
}

describe('azure-scheduled-events', () => {
  it('gives the events of --instance-id only (Azure broadcasts to the whole placement group)', async () => {
    const notices = await ok('azure-scheduled-events', fixture('scheduled-events.json'));
    expect(notices).toHaveLength(2);
    expect(notices[0]).toMatchObject({
      provider: 'azure',
      kind: 'interruption',
      action: 'terminate',
      instanceId: VM,
      deadline: '2016-09-19T18:29:47.000Z',
      detectedAt: NOW,
      source: 'imds',
      eventId: PREEMPT_ID,
    });
    expect(notices[1]).toMatchObject({ kind: 'maintenance', action: 'freeze', instanceId: VM, deadline: '2016-09-19T18:44:47.000Z', eventId: '3DA1B9AA-5204-4335-8C33-C54E315DCFFE' });
    // vmss_5's Reboot is someone else's.
    const other = await ok('azure-scheduled-events', fixture('scheduled-events.json'), { instanceId: 'vmss_5' });
    expect(other).toHaveLength(1);
    expect(other[0]).toMatchObject({ kind: 'maintenance', action: 'reboot', instanceId: 'vmss_5' });
    expect(await ok('azure-scheduled-events', fixture('scheduled-events.json'), { instanceId: 'vmss_99' })).toEqual([]);
  });

  it('Redeploy is maintenance/redeploy, Terminate is interruption/terminate', async () => {
    const notices = await ok('azure-scheduled-events', fixture('scheduled-events-redeploy-terminate.json'), { instanceId: 'myvm' });
    expect(notices.map((n) => [n.kind, n.action, n.deadline])).toEqual([
      ['maintenance', 'redeploy', '2016-09-20T08:00:00.000Z'],
      ['interruption', 'terminate', '2016-09-20T08:05:00.000Z'],
    ]);
  });

  it('Scheduled → Started is the same notice id; Started with an empty NotBefore has the detection time as deadline', async () => {
    const [scheduled] = await ok('azure-scheduled-events', fixture('scheduled-events.json'));
    const [started] = await ok('azure-scheduled-events', fixture('scheduled-events-started.json'));
    expect(started!.id).toBe(scheduled!.id);
    expect(started).toMatchObject({ kind: 'interruption', deadline: NOW, eventId: PREEMPT_ID });
  });

  it('an empty document carries nothing', async () => {
    expect(await ok('azure-scheduled-events', fixture('scheduled-events-empty.json'))).toEqual([]);
  });

  it('an unknown EventType carries nothing (a future type is not a reason to fail)', async () => {
    expect(await ok('azure-scheduled-events', withEvent((ev) => (ev.EventType = 'Hibernate')))).toHaveLength(1);
  });

  it('needs --instance-id, and says so', async () => {
    await malformed('azure-scheduled-events', fixture('scheduled-events.json'), 'pass --instance-id', { instanceId: null });
  });

  it('refuses malformed documents, naming the field', async () => {
    await malformed('azure-scheduled-events', '{"Events": []}', 'DocumentIncarnation: expected a non-negative integer, got nothing');
    await malformed('azure-scheduled-events', '{"DocumentIncarnation": 1, "Events": {}}', 'Events: expected an array, got object');
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.NotBefore = 'soon')), 'Events[0].NotBefore: "soon" is not an RFC 1123 time');
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.Resources = 'vmss_3')), 'Events[0].Resources: expected an array, got string');
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.EventStatus = 'Pending')), 'Events[0].EventStatus: "Pending" is not one of Scheduled, Started, Completed, Canceled');
    await malformed('azure-scheduled-events', withEvent((ev) => delete ev.EventId), 'Events[0].EventId: expected a string, got undefined');
  });

  it('refuses hostile values instead of passing them on', async () => {
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.EventId = 'x"; rm -rf /')), 'Events[0].EventId: "x"; rm -rf /" is not a scheduled event id');
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.Resources = ['vmss_3', '\u0000evil'])), 'Events[0].Resources[1]');
    await malformed('azure-scheduled-events', withEvent((ev) => (ev.DurationInSeconds = 'forever')), 'Events[0].DurationInSeconds: expected a number');
    await malformed('azure-scheduled-events', JSON.stringify({ DocumentIncarnation: 1, Events: Array.from({ length: 1001 }, () => ({})) }), 'Events: more than 1000 events');
  });
});

describe('eventgrid', () => {
  it('ScheduledEventEmitted (Event Grid schema) gives one notice per VM in Resources, id-equal to the IMDS notice', async () => {
    const notices = await ok('eventgrid', fixture('eventgrid-scheduled-event.json'), { instanceId: null });
    expect(notices.map((n) => n.instanceId)).toEqual(['vmss_3', 'vmss_4']);
    expect(notices[0]).toMatchObject({ provider: 'azure', kind: 'interruption', action: 'terminate', deadline: '2016-09-19T18:29:47.000Z', source: 'eventgrid', eventId: PREEMPT_ID });
    const [viaImds] = await ok('azure-scheduled-events', fixture('scheduled-events.json'));
    expect(notices[0]!.id).toBe(viaImds!.id);
  });

  it('the CloudEvents 1.0 form of the same event is the same notice', async () => {
    const eventGrid = await ok('eventgrid', fixture('eventgrid-scheduled-event.json'));
    const cloudEvent = await ok('eventgrid', fixture('cloudevent-scheduled-event.json'));
    expect(cloudEvent).toEqual(eventGrid);
  });

  it('Started keeps the id (deadline = detection); Canceled is the cancellation; Completed carries nothing', async () => {
    const [scheduled] = await ok('eventgrid', fixture('eventgrid-scheduled-event.json'));
    const [started] = await ok('eventgrid', fixture('eventgrid-scheduled-event-started.json'));
    expect(started!.id).toBe(scheduled!.id);
    expect(started!.deadline).toBe(NOW);
    const [canceled] = await ok('eventgrid', fixture('eventgrid-scheduled-event-canceled.json'));
    expect(canceled).toMatchObject({ kind: 'cancelled', action: 'terminate', instanceId: 'vmss_3', eventId: PREEMPT_ID, deadline: scheduled!.deadline });
    expect(canceled!.id).not.toBe(scheduled!.id);
    expect(await ok('eventgrid', fixture('eventgrid-scheduled-event-completed.json'))).toEqual([]);
  });

  it('the VirtualMachinePreempted health annotation is an interruption of the VM in targetResourceId', async () => {
    const [notice] = await ok('eventgrid', fixture('eventgrid-annotation-preempted.json'));
    expect(notice).toMatchObject({
      provider: 'azure',
      kind: 'interruption',
      action: 'terminate',
      instanceId: 'vmss_3',
      deadline: '2024-02-22T01:40:18.338Z',
      source: 'eventgrid',
      eventId: '3f1c7c1e-2a0b-4bb9-9d5e-1d5f8f0e7a11',
    });
    expect(await ok('eventgrid', fixture('cloudevent-annotation-preempted.json'))).toEqual([notice]);
  });

  it('other annotations, other event types and the subscription validation event carry nothing', async () => {
    expect(await ok('eventgrid', fixture('eventgrid-annotation-deallocation.json'))).toEqual([]);
    expect(await ok('eventgrid', fixture('eventgrid-blob-created.json'))).toEqual([]);
    expect(await ok('eventgrid', fixture('eventgrid-subscription-validation.json'))).toEqual([]);
  });

  it('refuses malformed deliveries, naming the field', async () => {
    await malformed('eventgrid', '42', 'event: expected an object, got number');
    await malformed('eventgrid', '[{"id": "1", "data": {}}]', '[0].eventType: expected a string, got undefined');
    await malformed('eventgrid', '{"specversion": "0.3", "type": "x", "id": "1"}', 'specversion: "0.3" is not 1.0');
    const scheduled = JSON.parse(fixture('eventgrid-scheduled-event.json')) as unknown;
    const annotated = JSON.parse(fixture('eventgrid-annotation-preempted.json')) as unknown;
    const noProps = edit(scheduled, [0, 'data', 'resourceInfo', 'properties'], DELETE);
    await malformed('eventgrid', JSON.stringify(noProps), '[0].data.resourceInfo.properties: expected an object, got undefined');
    const badTarget = edit(annotated, [0, 'data', 'resourceInfo', 'properties', 'targetResourceId'], '/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z');
    await malformed('eventgrid', JSON.stringify(badTarget), '[0].data.resourceInfo.properties.targetResourceId: "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storag…" names no virtual machine');
    const badNotBefore = edit(scheduled, [0, 'data', 'resourceInfo', 'properties', 'NotBefore'], 'Mon, 32 Sep 2016 99:29:47 GMT');
    await malformed('eventgrid', JSON.stringify(badNotBefore), '[0].data.resourceInfo.properties.NotBefore');
  });
});

describe('resource name from IMDS compute metadata', () => {
  it('a Uniform scale-set instance is <vmScaleSetName>_<instance id>; a plain VM is its name', () => {
    const compute = JSON.parse(fixture('compute-vmss.json')) as Record<string, unknown>;
    expect(resourceNameFromCompute(compute)).toBe('vmss_3');
    expect(resourceNameFromCompute({ ...compute, name: 'vmss_3' , resourceId: '/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/12' })).toBe('vmss_12');
    expect(resourceNameFromCompute({ name: 'gpu-box', vmScaleSetName: '', resourceId: '/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/gpu-box' })).toBe('gpu-box');
    expect(() => resourceNameFromCompute({ vmId: 'x' })).toThrow(/compute.name/);
  });
});
