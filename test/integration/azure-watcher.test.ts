import { afterEach, describe, expect, it } from 'vitest';
import { simulateCommand } from '../../src/cli/simulate-command.js';
import { silentLogger } from '../../src/logger.js';
import type { Notice } from '../../src/notice.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { azureProvider } from '../../providers/azure/index.js';
import { approveScheduledEvent } from '../../providers/azure/metadata-client.js';
import { AzureWatcher, type AzureWatcherOptions } from '../../providers/azure/watcher.js';
import { control, waitFor } from '../support/agent-harness.js';
import { runInProcess } from '../support/in-process-cli.js';
import { metric, startWatcherRig, stopWatcherRig, type WatcherRig } from '../support/watcher-rig.js';

/**
 * The Azure watcher against the Azure emulator over real HTTP on 127.0.0.1: Scheduled Events polling,
 * broadcast filtering, lifecycles, the slow first call, faults and approval.
 */

const VM = 'vmss_3';
const POLL_MS = 100;

type Rig = WatcherRig<AzureWatcher>;

let rig: Rig | undefined;
let extra: EmulatorHandle | undefined;

afterEach(async () => {
  await stopWatcherRig(rig);
  await extra?.close();
  rig = undefined;
  extra = undefined;
});

type Json = Record<string, unknown>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(options: Partial<AzureWatcherOptions> = {}, before?: (emulator: EmulatorHandle) => Promise<unknown>, onNotice?: (n: Notice) => Promise<void>): Promise<Rig> {
  const emulator = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: VM });
  if (before) await before(emulator);
  rig = startWatcherRig(emulator, (metrics) => new AzureWatcher({ endpoint: emulator.url, pollIntervalMs: POLL_MS, requestTimeoutMs: 300, logger: silentLogger, metrics, ...options }), onNotice);
  return rig;
}

/** Waits until the watcher has polled `n` more times. */
async function polls(r: Rig, n: number): Promise<void> {
  const start = (await control(r.emulator, 'state')).scheduledEventsGets as number;
  await waitFor(`${n} polls`, n * POLL_MS * 4 + 1000, async () => (((await control(r.emulator, 'state')).scheduledEventsGets as number) >= start + n ? true : undefined));
}

describe('Azure IMDS emulator', () => {
  it('refuses requests without Metadata: true or api-version (400), serves the document and compute metadata', async () => {
    extra = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: VM });
    const url = `${extra.url}/metadata/scheduledevents`;
    const noHeader = await fetch(`${url}?api-version=2020-07-01`);
    expect(noHeader.status).toBe(400);
    expect(await noHeader.json()).toEqual({ error: 'Bad request. Required metadata header not specified' });
    const noVersion = await fetch(url, { headers: { Metadata: 'true' } });
    expect(noVersion.status).toBe(400);
    expect(((await noVersion.json()) as Json).error).toContain('api-version was not specified');
    const badVersion = await fetch(`${url}?api-version=2099-01-01`, { headers: { Metadata: 'true' } });
    expect(badVersion.status).toBe(400);

    await control(extra, 'schedule', { type: 'Reboot', resources: 'vmss_7', notBeforeIn: 900, eventId: 'E1' });
    const doc = (await (await fetch(`${url}?api-version=2020-07-01`, { headers: { Metadata: 'true' } })).json()) as Json;
    expect(doc.DocumentIncarnation).toBe(1);
    expect(doc.Events).toEqual([
      expect.objectContaining({ EventId: 'E1', EventType: 'Reboot', EventStatus: 'Scheduled', ResourceType: 'VirtualMachine', Resources: ['vmss_7'], EventSource: 'Platform' }),
    ]);
    const notBefore = (doc.Events as Json[])[0]!.NotBefore as string;
    expect(notBefore).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);

    const compute = (await (await fetch(`${extra.url}/metadata/instance/compute?api-version=2021-02-01`, { headers: { Metadata: 'true' } })).json()) as Json;
    expect(compute).toMatchObject({ name: VM, vmScaleSetName: 'vmss', priority: 'Spot' });
    expect(compute.resourceId).toMatch(/\/virtualMachineScaleSets\/vmss\/virtualMachines\/3$/);

    const badApproval = await fetch(`${url}?api-version=2020-07-01`, { method: 'POST', headers: { Metadata: 'true' }, body: '{"EventId": "E1"}' });
    expect(badApproval.status).toBe(400);
    await expect(control(extra, 'schedule', { type: 'Nap' })).rejects.toThrow(/400.*type/);
    await expect(control(extra, 'start', { eventId: 'nope' })).rejects.toThrow(/404/);
  });

  it('is driven by `spotwatch simulate azure <command>`', async () => {
    extra = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: VM });
    const { code, stdout, stderr } = await runInProcess(simulateCommand, ['azure', 'schedule', '--type', 'Preempt', '--resources', 'vmss_3,vmss_4', '--not-before-in', '30', '--endpoint', extra.url]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const answer = JSON.parse(stdout) as { eventId: string; document: { DocumentIncarnation: number; Events: Json[] } };
    expect(answer.document.Events).toEqual([expect.objectContaining({ EventId: answer.eventId, EventType: 'Preempt', Resources: ['vmss_3', 'vmss_4'] })]);
    expect(Date.parse(answer.document.Events[0]!.NotBefore as string) - Date.now()).toBeGreaterThan(28_000);
  });
});

describe('Azure watcher (Scheduled Events)', () => {
  it('sees an event already scheduled at start, for this VM only (broadcasts for other VMs ignored)', async () => {
    let eventId = '';
    const r = await setup({}, async (emulator) => {
      eventId = (await control(emulator, 'schedule', { type: 'Preempt', resources: 'vmss_3,vmss_4', notBeforeIn: 30 })).eventId as string;
      await control(emulator, 'schedule', { type: 'Reboot', resources: 'vmss_5,vmss_6' });
      await control(emulator, 'schedule', { type: 'Freeze', resources: 'vmss_4' });
    });
    const notice = await waitFor('the preemption', 2000, () => r.notices[0]);
    const doc = (await control(r.emulator, 'state')).document as { Events: Json[] };
    const notBefore = doc.Events.find((e) => e.EventId === eventId)!.NotBefore as string;
    expect(notice).toMatchObject({ provider: 'azure', kind: 'interruption', action: 'terminate', instanceId: VM, source: 'imds', eventId, deadline: new Date(notBefore).toISOString() });
    await polls(r, 5);
    expect(r.notices).toHaveLength(1);
    // Broadcasts only for other VMs: still nothing new.
    await control(r.emulator, 'schedule', { type: 'Terminate', resources: 'vmss_8' });
    await polls(r, 3);
    expect(r.notices).toHaveLength(1);
    expect(r.watcher.documentIncarnation).toBe(4);
    const identity = await r.watcher.identity();
    expect(identity).toMatchObject({ provider: 'azure', instanceId: VM, lifecycle: 'spot', instanceType: 'Standard_NC24ads_A100_v4' });
  });

  it('Reboot, Redeploy, Freeze are maintenance notices; an event withdrawn before it starts is cancelled (same identity)', async () => {
    const r = await setup();
    await polls(r, 1);
    await control(r.emulator, 'schedule', { type: 'Reboot', eventId: 'R1' });
    await control(r.emulator, 'schedule', { type: 'Redeploy', eventId: 'R2' });
    await control(r.emulator, 'schedule', { type: 'Freeze', eventId: 'R3' });
    await waitFor('three notices', 2000, () => (r.notices.length >= 3 ? true : undefined));
    expect(r.notices.map((n) => [n.eventId, n.kind, n.action])).toEqual([
      ['R1', 'maintenance', 'reboot'],
      ['R2', 'maintenance', 'redeploy'],
      ['R3', 'maintenance', 'freeze'],
    ]);
    await control(r.emulator, 'remove', { eventId: 'R2' });
    const cancelled = await waitFor('the cancellation', 2000, () => r.notices[3]);
    expect(cancelled).toMatchObject({ kind: 'cancelled', action: 'redeploy', instanceId: VM, eventId: 'R2', deadline: r.notices[1]!.deadline });
    await polls(r, 3);
    expect(r.notices).toHaveLength(4);
  });

  it('Scheduled → Started keeps the notice id (deadline becomes the start); Started then removed is no cancellation', async () => {
    const r = await setup();
    await control(r.emulator, 'schedule', { type: 'Preempt', eventId: 'P1', notBeforeIn: 30 });
    const scheduled = await waitFor('scheduled', 2000, () => r.notices[0]);
    const startedAt = Date.now();
    await control(r.emulator, 'start', { eventId: 'P1' });
    const started = await waitFor('started', 2000, () => r.notices[1]);
    expect(started.id).toBe(scheduled.id);
    expect(started.kind).toBe('interruption');
    expect(Date.parse(started.deadline!)).toBeGreaterThanOrEqual(startedAt - 5);
    expect(Date.parse(started.deadline!)).toBeLessThan(Date.parse(scheduled.deadline!));
    await control(r.emulator, 'remove', { eventId: 'P1' });
    await polls(r, 3);
    expect(r.notices).toHaveLength(2);
  });

  it('an event first seen Started (no Scheduled phase, empty NotBefore) has the detection time as deadline', async () => {
    const r = await setup();
    await polls(r, 1);
    await control(r.emulator, 'schedule', { type: 'Preempt', eventId: 'S1', status: 'Started' });
    const notice = await waitFor('the notice', 2000, () => r.notices[0]);
    expect(notice).toMatchObject({ kind: 'interruption', action: 'terminate', eventId: 'S1', deadline: notice.detectedAt });
    await polls(r, 3);
    expect(r.notices).toHaveLength(1);
  });

  it('a slow first call (the service enabling itself) neither hangs the watcher nor counts as a failure', async () => {
    const r = await setup({ requestTimeoutMs: 200 }, async (emulator) => {
      await control(emulator, 'configure', { firstCallDelayMs: 1200 });
      await control(emulator, 'schedule', { type: 'Preempt', eventId: 'F1', notBeforeIn: 30 });
    });
    const t0 = Date.now();
    await sleep(700);
    expect(r.notices).toEqual([]);
    expect(r.watcher.health().alive).toBe(true);
    const notice = await waitFor('the notice after the slow first call', 3000, () => r.notices[0]);
    expect(notice.eventId).toBe('F1');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'azure', reason: 'timeout' })).toBe(0);
    // Later calls are fast and use the normal timeout.
    await polls(r, 3);
    expect(r.watcher.health()).toMatchObject({ alive: true, consecutiveErrors: 0 });
  });

  it('a first call slower than its timeout is retried, never given up on', async () => {
    const r = await setup({ requestTimeoutMs: 100, firstCallTimeoutMs: 300 }, async (emulator) => {
      await control(emulator, 'configure', { firstCallDelayMs: 900 });
      await control(emulator, 'schedule', { type: 'Terminate', eventId: 'T1', notBeforeIn: 300 });
    });
    const notice = await waitFor('the notice', 4000, () => r.notices[0]);
    expect(notice).toMatchObject({ kind: 'interruption', action: 'terminate', eventId: 'T1' });
    expect(await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'azure', reason: 'timeout' })).toBeGreaterThanOrEqual(1);
  });

  it('a 503 storm gives no notice and no crash, never cancels a known event, and detection recovers', async () => {
    const r = await setup({ errorBackoffMs: 50 });
    await control(r.emulator, 'schedule', { type: 'Reboot', eventId: 'K1' });
    await waitFor('the first notice', 2000, () => r.notices[0]);
    await control(r.emulator, 'fault', { status: 503 });
    await control(r.emulator, 'remove', { eventId: 'K1' });
    await control(r.emulator, 'schedule', { type: 'Preempt', eventId: 'K2', notBeforeIn: 30 });
    await waitFor('a storm of 503s', 3000, async () => ((await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'azure', reason: 'http_5xx' })) >= 8 ? true : undefined));
    expect(r.notices).toHaveLength(1);
    expect(r.watcher.health().alive).toBe(true);
    expect(r.watcher.health().consecutiveErrors).toBeGreaterThanOrEqual(8);
    await control(r.emulator, 'clear-faults');
    await waitFor('recovery', 2000, () => (r.notices.length >= 3 ? true : undefined));
    expect(r.notices.slice(1).map((n) => [n.eventId, n.kind])).toEqual(
      expect.arrayContaining([
        ['K2', 'interruption'],
        ['K1', 'cancelled'],
      ]),
    );
    expect(r.watcher.health().consecutiveErrors).toBe(0);
  });

  it('approval is sent only after the drain: the emulator records it after the drain finished, and only then starts the event', async () => {
    const drain: { startedAt?: number; finishedAt?: number } = {};
    let endpoint = '';
    const r = await setup({}, async (emulator) => {
      endpoint = emulator.url;
    }, async (notice) => {
      if (notice.kind !== 'interruption' || drain.startedAt !== undefined) return;
      // What the migration worker does: drain every task, then approve. Not awaited by the watcher's handler.
      drain.startedAt = Date.now();
      void (async () => {
        await sleep(300); // checkpoint + restore elsewhere
        drain.finishedAt = Date.now();
        await approveScheduledEvent(endpoint, notice.eventId!);
      })();
    });
    await control(r.emulator, 'schedule', { type: 'Preempt', eventId: 'A1', notBeforeIn: 30 });
    const scheduled = await waitFor('the notice', 2000, () => r.notices[0]);
    // While draining: no approval, the event still Scheduled.
    await sleep(150);
    const during = await control(r.emulator, 'state');
    expect(drain.finishedAt).toBeUndefined();
    expect(during.approvals).toEqual([]);
    expect((during.document as { Events: Json[] }).Events[0]!.EventStatus).toBe('Scheduled');

    const started = await waitFor('the started notice', 2000, () => r.notices[1]);
    const after = await control(r.emulator, 'state');
    const approvals = after.approvals as { eventId: string; at: string; started: boolean }[];
    expect(approvals).toHaveLength(1);
    expect(approvals[0]).toMatchObject({ eventId: 'A1', started: true });
    expect(Date.parse(approvals[0]!.at)).toBeGreaterThanOrEqual(drain.finishedAt!);
    expect((after.document as { Events: Json[] }).Events[0]).toMatchObject({ EventId: 'A1', EventStatus: 'Started', NotBefore: '' });
    expect(started.id).toBe(scheduled.id);
    expect(await metric(r.metrics, 'spotwatch_metadata_requests_total', { provider: 'azure', path: 'scheduledevents' })).toBeGreaterThan(2);
  });

  it('an approval refused by IMDS is an error the caller sees', async () => {
    extra = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: VM });
    await control(extra, 'fault', { status: 500, count: 1 });
    await expect(approveScheduledEvent(extra.url, 'X1')).rejects.toThrow(/HTTP 500/);
    await expect(approveScheduledEvent(extra.url, 'bad id"')).rejects.toThrow(/not a scheduled event id/);
  });

  it('the instance id override replaces the name from compute metadata', async () => {
    const r = await setup({ instanceId: 'vmss_4' });
    await control(r.emulator, 'schedule', { type: 'Preempt', resources: 'vmss_3', eventId: 'O1' });
    await control(r.emulator, 'schedule', { type: 'Preempt', resources: 'vmss_4', eventId: 'O2' });
    const notice = await waitFor('the notice', 2000, () => r.notices[0]);
    expect(notice).toMatchObject({ instanceId: 'vmss_4', eventId: 'O2' });
    await polls(r, 2);
    expect(r.notices).toHaveLength(1);
  });

  it('stop() ends a hanging first call promptly; detect() recognises IMDS only', async () => {
    const r = await setup({}, (emulator) => control(emulator, 'configure', { firstCallDelayMs: 5000 }));
    await sleep(100);
    const t0 = performance.now();
    await r.watcher.stop();
    expect(performance.now() - t0).toBeLessThan(200);
    expect(await azureProvider.detect(r.emulator.url, 500)).toBe(true);
    extra = await (await import('../../providers/gcp/index.js')).gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    expect(await azureProvider.detect(extra.url, 500)).toBe(false);
  });
});
