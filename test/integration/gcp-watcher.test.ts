import { afterEach, describe, expect, it } from 'vitest';
import { simulateCommand } from '../../src/cli/simulate-command.js';
import { silentLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics.js';
import type { Notice } from '../../src/notice.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { gcpProvider } from '../../providers/gcp/index.js';
import { GcpMetadataClient } from '../../providers/gcp/metadata-client.js';
import { gcpParsers } from '../../providers/gcp/parsers.js';
import { GcpWatcher, type GcpWatcherOptions } from '../../providers/gcp/watcher.js';
import { control, waitFor } from '../support/agent-harness.js';
import { runInProcess } from '../support/in-process-cli.js';
import { metric, startWatcherRig, stopWatcherRig, type WatcherRig } from '../support/watcher-rig.js';

/**
 * The GCP watcher against the GCP emulator over real HTTP on 127.0.0.1: hanging GETs, ETags, faults.
 */

const INSTANCE = '4520031799277581759';

type Rig = WatcherRig<GcpWatcher>;

let rig: Rig | undefined;
let extra: EmulatorHandle | undefined;

afterEach(async () => {
  await stopWatcherRig(rig);
  await extra?.close();
  rig = undefined;
  extra = undefined;
});

async function setup(options: Partial<GcpWatcherOptions> = {}, before?: (emulator: EmulatorHandle) => Promise<void>): Promise<Rig> {
  const emulator = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
  if (before) await before(emulator);
  rig = startWatcherRig(emulator, (metrics) => new GcpWatcher({ endpoint: emulator.url, pollIntervalMs: 1000, requestTimeoutMs: 500, logger: silentLogger, metrics, errorBackoffMs: 50, ...options }));
  return rig;
}

/** Waits until both keys' hanging GETs are parked on the emulator. */
async function parked(r: Rig): Promise<void> {
  await waitFor('both hanging GETs parked', 2000, async () => ((await control(r.emulator, 'state')).waiting === 2 ? true : undefined));
}

describe('GCP metadata server emulator', () => {
  it('answers like the metadata server: Metadata-Flavor required and echoed, ETags, hanging GETs with timeout_sec', async () => {
    extra = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    const url = `${extra.url}/computeMetadata/v1/instance/preempted`;
    const refused = await fetch(url);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('Missing Metadata-Flavor:Google header.');
    const proxied = await fetch(url, { headers: { 'Metadata-Flavor': 'Google', 'X-Forwarded-For': '10.0.0.1' } });
    expect(proxied.status).toBe(403);

    const plain = await fetch(url, { headers: { 'Metadata-Flavor': 'Google', Host: 'metadata.google.internal' } });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('metadata-flavor')).toBe('Google');
    const etag = plain.headers.get('etag');
    expect(etag).toMatch(/^[0-9a-f]{16}$/);
    expect(await plain.text()).toBe('FALSE');

    // Unchanged: held for timeout_sec, then the same value and ETag.
    const t0 = performance.now();
    const held = await fetch(`${url}?wait_for_change=true&last_etag=${etag}&timeout_sec=1`, { headers: { 'Metadata-Flavor': 'Google' } });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(950);
    expect(held.headers.get('etag')).toBe(etag);
    expect(await held.text()).toBe('FALSE');

    // last_etag=0 answers at once; a change wakes a parked request with the new ETag.
    const immediate = await fetch(`${url}?wait_for_change=true&last_etag=0`, { headers: { 'Metadata-Flavor': 'Google' } });
    expect(await immediate.text()).toBe('FALSE');
    const parkedGet = fetch(`${url}?wait_for_change=true&last_etag=${etag}&timeout_sec=30`, { headers: { 'Metadata-Flavor': 'Google' } });
    await waitFor('parked', 1000, async () => ((await control(extra!, 'state')).waiting === 1 ? true : undefined));
    await control(extra, 'preempt');
    const woke = await parkedGet;
    expect(await woke.text()).toBe('TRUE');
    expect(woke.headers.get('etag')).not.toBe(etag);

    const bad = await fetch(`${url}?wait_for_change=true&timeout_sec=abc`, { headers: { 'Metadata-Flavor': 'Google' } });
    expect(bad.status).toBe(400);
    const missing = await fetch(`${extra.url}/computeMetadata/v1/instance/nope`, { headers: { 'Metadata-Flavor': 'Google' } });
    expect(missing.status).toBe(404);
    const recursive = await fetch(`${extra.url}/computeMetadata/v1/instance/scheduling/?recursive=true`, { headers: { 'Metadata-Flavor': 'Google' } });
    expect(await recursive.json()).toEqual({ automaticRestart: 'FALSE', onHostMaintenance: 'TERMINATE', preemptible: 'TRUE', provisioningModel: 'SPOT' });
  });

  it('upcoming maintenance: "nothing scheduled" and an announced window both read correctly', async () => {
    extra = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    const client = new GcpMetadataClient({ endpoint: extra.url, requestTimeoutMs: 500 });
    expect(await client.upcomingMaintenance()).toBeUndefined();
    const before = Date.now();
    await control(extra, 'upcoming', { windowStartIn: 3600, type: 'SCHEDULED', canReschedule: true });
    const upcoming = await client.upcomingMaintenance();
    expect(upcoming).toMatchObject({ type: 'SCHEDULED', maintenanceStatus: 'PENDING', canReschedule: true });
    expect(upcoming!.windowStart!.getTime()).toBeGreaterThanOrEqual(before + 3_600_000 - 1000);
    expect(upcoming!.windowEnd!.getTime() - upcoming!.windowStart!.getTime()).toBe(3_600_000);
    await control(extra, 'upcoming', { none: true });
    expect(await client.upcomingMaintenance()).toBeUndefined();
  });

  it('is driven by `spotwatch simulate gcp <command>` and validates control bodies', async () => {
    extra = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    const env = { SPOTWATCH_SIMULATOR_URL: extra.url };
    const set = await runInProcess(simulateCommand, ['gcp', 'maintenance', '--value', 'MIGRATE_ON_HOST_MAINTENANCE'], { env });
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout).values['instance/maintenance-event']).toBe('MIGRATE_ON_HOST_MAINTENANCE');
    const refused = await runInProcess(simulateCommand, ['gcp', 'maintenance', '--value', 'REBOOT'], { env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('400');
    expect(refused.stderr).toContain('value');
  });
});

describe('GCP watcher (hanging GETs)', () => {
  it('sees a preemption already set at start (plain GET first) and reads the numeric identity', async () => {
    const r = await setup({}, (emulator) => control(emulator, 'preempt').then(() => undefined));
    const notice = await waitFor('the preemption notice', 2000, () => r.notices[0]);
    expect(notice).toMatchObject({ provider: 'gcp', kind: 'interruption', action: 'terminate', instanceId: INSTANCE, source: 'imds' });
    expect(Date.parse(notice.deadline!) - Date.parse(notice.detectedAt)).toBe(30_000);
    // The same preemption through the Pub/Sub audit log has the same id.
    const [fromParser] = gcpParsers['gcp-preempted']!('TRUE', { now: new Date(), instanceId: INSTANCE });
    expect(notice.id).toBe(fromParser!.id);
    const identity = await r.watcher.identity();
    expect(identity).toMatchObject({ provider: 'gcp', instanceId: INSTANCE, zone: 'us-central1-a', instanceType: 'a2-highgpu-1g', lifecycle: 'spot', name: 'spotwatch-gpu-1', projectId: 'spotwatch-demo' });
  });

  it('detects a change within milliseconds of it (event-driven, not polled)', async () => {
    const r = await setup();
    await parked(r);
    const requestsBefore = (await control(r.emulator, 'state')).requests as number;
    await new Promise((res) => setTimeout(res, 300));
    // Idle: no polling while nothing changes.
    expect((await control(r.emulator, 'state')).requests).toBe(requestsBefore);
    const changedAt = performance.now();
    await control(r.emulator, 'preempt');
    await waitFor('the notice', 1000, () => r.notices[0]);
    const latency = r.arrivals[0]! - changedAt;
    expect(latency).toBeLessThan(500);
    expect(r.notices).toHaveLength(1);
    expect(r.watcher.health()).toMatchObject({ alive: true, consecutiveErrors: 0 });
  });

  it('maintenance: TERMINATE (60 s deadline), MIGRATE, back to NONE → cancelled; NONE never cancels preempted=TRUE', async () => {
    const r = await setup();
    await parked(r);
    await control(r.emulator, 'maintenance', { value: 'TERMINATE_ON_HOST_MAINTENANCE' });
    const terminate = await waitFor('terminate', 1000, () => r.notices[0]);
    expect(terminate).toMatchObject({ kind: 'maintenance', action: 'terminate', instanceId: INSTANCE });
    expect(Date.parse(terminate.deadline!) - Date.parse(terminate.detectedAt)).toBe(60_000);

    await control(r.emulator, 'maintenance', { value: 'MIGRATE_ON_HOST_MAINTENANCE' });
    await waitFor('terminate cancelled + migrate', 1000, () => (r.notices.length >= 3 ? true : undefined));
    expect(r.notices[1]).toMatchObject({ kind: 'cancelled', action: 'terminate', deadline: terminate.deadline });
    expect(r.notices[2]).toMatchObject({ kind: 'maintenance', action: 'migrate' });
    expect(r.notices[2]!.deadline).toBeUndefined();

    await control(r.emulator, 'preempt');
    await waitFor('preemption', 1000, () => r.notices.find((n) => n.kind === 'interruption'));
    await control(r.emulator, 'maintenance', { value: 'NONE' });
    await waitFor('migrate cancelled', 1000, () => r.notices.find((n) => n.kind === 'cancelled' && n.action === 'migrate'));
    await new Promise((res) => setTimeout(res, 100));
    expect(r.notices.map((n) => `${n.kind}/${n.action}`)).toEqual(['maintenance/terminate', 'cancelled/terminate', 'maintenance/migrate', 'interruption/terminate', 'cancelled/migrate']);

    // preempted back to FALSE cancels the preemption, with the same identity.
    await control(r.emulator, 'clear');
    const cancelled = await waitFor('preemption cancelled', 1000, () => r.notices[5]);
    const preemption = r.notices[3]!;
    expect(cancelled).toMatchObject({ kind: 'cancelled', action: 'terminate', instanceId: INSTANCE, deadline: preemption.deadline });
  });

  it('a 503 storm gives no notice and no crash, and the notice set meanwhile is detected once it ends', async () => {
    const r = await setup({}, async (emulator) => {
      await control(emulator, 'fault', { status: 503 });
      await control(emulator, 'preempt');
    });
    await waitFor('a storm of 503s', 3000, async () => ((await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'gcp', reason: 'http_5xx' })) >= 10 ? true : undefined));
    expect(r.notices).toEqual([]);
    expect(r.watcher.health()).toMatchObject({ alive: true, lastSuccessAt: undefined });
    expect(r.watcher.health().consecutiveErrors).toBeGreaterThan(2);

    const endedAt = performance.now();
    await control(r.emulator, 'clear-faults');
    await waitFor('the notice after the storm', 2000, () => r.notices[0]);
    expect(r.notices[0]).toMatchObject({ kind: 'interruption', action: 'terminate', instanceId: INSTANCE });
    expect(r.arrivals[0]! - endedAt).toBeLessThan(500);
    await parked(r);
    expect(r.watcher.health().consecutiveErrors).toBe(0);
    expect(r.watcher.health().lastSuccessAt).toBeInstanceOf(Date);
    expect(await metric(r.metrics, 'spotwatch_metadata_last_success_timestamp_seconds', { provider: 'gcp' })).toBeGreaterThan(Date.now() / 1000 - 5);
    // A short storm in the middle of watching: still one notice, and a change after it is seen at once.
    await control(r.emulator, 'fault', { status: 503, count: 4 });
    await control(r.emulator, 'maintenance', { value: 'TERMINATE_ON_HOST_MAINTENANCE' });
    await waitFor('the maintenance notice', 2000, () => r.notices[1]);
    expect(r.notices.map((n) => `${n.kind}/${n.action}`)).toEqual(['interruption/terminate', 'maintenance/terminate']);
  });

  it('an error never clears a notice: dropped connections and timeouts after TRUE cancel nothing', async () => {
    const r = await setup({ requestTimeoutMs: 100, hangingTimeoutSec: 1 });
    await parked(r);
    await control(r.emulator, 'preempt');
    await waitFor('the notice', 1000, () => r.notices[0]);
    await control(r.emulator, 'fault', { drop: true, count: 6 });
    await waitFor('connection errors', 3000, async () => ((await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'gcp', reason: 'connection' })) >= 2 ? true : undefined));
    await control(r.emulator, 'fault', { delayMs: 1500, count: 2 });
    await waitFor('timeouts', 4000, async () => ((await metric(r.metrics, 'spotwatch_metadata_errors_total', { provider: 'gcp', reason: 'timeout' })) >= 1 ? true : undefined));
    await control(r.emulator, 'clear-faults');
    await parked(r);
    expect(r.notices.map((n) => n.kind)).toEqual(['interruption']);
    expect(r.watcher.health().alive).toBe(true);
  });

  it('a failing notice handler does not stop the watcher: the notice is retried, in order, until accepted', async () => {
    const emulator = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    const watcher = new GcpWatcher({ endpoint: emulator.url, pollIntervalMs: 1000, requestTimeoutMs: 500, logger: silentLogger, metrics: new Metrics(), errorBackoffMs: 50 });
    rig = { emulator, watcher, metrics: new Metrics(), notices: [], arrivals: [] };
    const accepted: Notice[] = [];
    let failures = 0;
    watcher.start(async (notice) => {
      if (failures < 2) {
        failures++;
        throw new Error('redis is down and the spool is full');
      }
      accepted.push(notice);
    });
    await parked(rig);
    await control(emulator, 'preempt');
    await control(emulator, 'maintenance', { value: 'TERMINATE_ON_HOST_MAINTENANCE' });
    await waitFor('both notices accepted', 3000, () => (accepted.length === 2 ? true : undefined));
    expect(failures).toBe(2);
    expect(accepted.map((n) => n.kind)).toEqual(['interruption', 'maintenance']);
    expect(watcher.health().alive).toBe(true);
  });

  it('stop() ends the hanging requests at once', async () => {
    const r = await setup({ hangingTimeoutSec: 60 });
    await parked(r);
    const t0 = performance.now();
    await r.watcher.stop();
    expect(performance.now() - t0).toBeLessThan(200);
    await waitFor('the emulator to see the requests go', 1000, async () => ((await control(r.emulator, 'state')).waiting === 0 ? true : undefined));
    expect(r.watcher.health().alive).toBe(false);
  });

  it('detect() recognises the metadata server and nothing else', async () => {
    extra = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    expect(await gcpProvider.detect(extra.url, 500)).toBe(true);
    await extra.close();
    const t0 = performance.now();
    expect(await gcpProvider.detect(extra.url, 300)).toBe(false);
    expect(performance.now() - t0).toBeLessThan(1000);
    extra = undefined;
  });
});
