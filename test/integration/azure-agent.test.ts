import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { NOTICES_QUEUE_NAME } from '../../src/queue/notice-queue.js';
import { azureProvider } from '../../providers/azure/index.js';

/** The agent on Azure: emulator → Scheduled Events poll → notice → job in a real Redis. */

const redisUrl = inject('redisUrl');
const VM = 'vmss_3';
const POLL_MS = 100;

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function start(): Promise<{ emulator: EmulatorHandle; queue: Queue; agent: Agent }> {
  const emulator = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: VM });
  const workDir = mkdtempSync(join(tmpdir(), 'spotwatch-azure-'));
  const prefix = `z${randomBytes(4).toString('hex')}`;
  const { config } = loadConfig(
    {
      provider: 'azure',
      metadataEndpoint: emulator.url,
      redisUrl,
      queuePrefix: prefix,
      nodeId: 'azure-node',
      pollIntervalMs: String(POLL_MS),
      httpHost: '127.0.0.1',
      httpPort: '0',
      requestTimeoutMs: '500',
      spoolPath: join(workDir, 'spool.jsonl'),
      logLevel: 'silent',
      migrate: 'false',
    },
    {},
  );
  const agent = new Agent({ config, provider: azureProvider, endpoint: emulator.url, logger: silentLogger });
  const queue = new Queue(NOTICES_QUEUE_NAME, { connection: { url: redisUrl }, prefix });
  cleanup = async () => {
    await agent.stop();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await emulator.close();
    rmSync(workDir, { recursive: true, force: true });
  };
  await agent.start();
  return { emulator, queue, agent };
}

const jobsOf = async (queue: Queue) => (await queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized'])).map((j) => ({ id: j.id!, data: j.data as Record<string, unknown>, timestamp: j.timestamp }));

async function control(emulator: EmulatorHandle, command: string, body: Record<string, unknown> = {}): Promise<void> {
  const res = await fetch(`${emulator.controlUrl}/${command}`, { method: 'POST', body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${command}: ${res.status} ${await res.text()}`);
}

describe('agent + Azure emulator + Redis', () => {
  it('one job per scheduled event of this VM, within a poll interval; Started keeps it one job; broadcasts give none', async () => {
    const { emulator, queue, agent } = await start();
    expect(agent.identity).toMatchObject({ provider: 'azure', instanceId: VM, lifecycle: 'spot' });
    await control(emulator, 'schedule', { type: 'Reboot', resources: 'vmss_5,vmss_6', eventId: 'OTHER' });
    const scheduledAt = Date.now();
    await control(emulator, 'schedule', { type: 'Preempt', resources: 'vmss_3,vmss_4', eventId: 'EV1', notBeforeIn: 30 });
    const [job] = await waitFor('the job', 2000, async () => {
      const jobs = await jobsOf(queue);
      return jobs.length > 0 ? jobs : undefined;
    });
    expect(job!.timestamp - scheduledAt).toBeLessThanOrEqual(POLL_MS + 100);
    expect(job!.data).toMatchObject({ provider: 'azure', kind: 'interruption', action: 'terminate', instanceId: VM, source: 'imds', eventId: 'EV1' });
    await control(emulator, 'start', { eventId: 'EV1' });
    await new Promise((r) => setTimeout(r, 5 * POLL_MS));
    const jobs = await jobsOf(queue);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.id).toBe(job!.id);
  });
});
