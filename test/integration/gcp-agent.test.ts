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
import { gcpProvider } from '../../providers/gcp/index.js';
import { gcpParsers } from '../../providers/gcp/parsers.js';

/** The agent on GCP: emulator → hanging GET → notice → job in a real Redis. */

const redisUrl = inject('redisUrl');
const INSTANCE = '4520031799277581759';

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
  const emulator = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
  const workDir = mkdtempSync(join(tmpdir(), 'spotwatch-gcp-'));
  const prefix = `g${randomBytes(4).toString('hex')}`;
  const { config } = loadConfig(
    {
      provider: 'gcp',
      metadataEndpoint: emulator.url,
      redisUrl,
      queuePrefix: prefix,
      nodeId: 'gcp-node',
      httpHost: '127.0.0.1',
      httpPort: '0',
      requestTimeoutMs: '500',
      spoolPath: join(workDir, 'spool.jsonl'),
      logLevel: 'silent',
      migrate: 'false',
    },
    {},
  );
  const agent = new Agent({ config, provider: gcpProvider, endpoint: emulator.url, logger: silentLogger });
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

describe('agent + GCP emulator + Redis', () => {
  it('turns preempted=TRUE into exactly one job within milliseconds, with the id the Pub/Sub path would give', async () => {
    const { emulator, queue, agent } = await start();
    expect(agent.identity).toMatchObject({ provider: 'gcp', instanceId: INSTANCE, lifecycle: 'spot' });
    await waitFor('hanging GETs parked', 2000, async () => (((await (await fetch(`${emulator.controlUrl}/state`)).json()) as { waiting: number }).waiting === 2 ? true : undefined));
    const changedAt = Date.now();
    await fetch(`${emulator.controlUrl}/preempt`, { method: 'POST', body: '{}' });
    const [job] = await waitFor('the job', 2000, async () => {
      const jobs = await jobsOf(queue);
      return jobs.length > 0 ? jobs : undefined;
    });
    expect(job!.timestamp - changedAt).toBeLessThan(500);
    expect(job!.data).toMatchObject({ provider: 'gcp', kind: 'interruption', action: 'terminate', instanceId: INSTANCE, source: 'imds' });
    const [viaPubsub] = gcpParsers.pubsub!(
      JSON.stringify({
        message: {
          messageId: '1',
          data: Buffer.from(
            JSON.stringify({
              protoPayload: { methodName: 'compute.instances.preempted', resourceName: 'projects/p/zones/us-central1-a/instances/spotwatch-gpu-1' },
              resource: { type: 'gce_instance', labels: { instance_id: INSTANCE } },
              timestamp: new Date().toISOString(),
            }),
          ).toString('base64'),
        },
      }),
      { now: new Date() },
    );
    expect(job!.id).toBe(viaPubsub!.id);
    await new Promise((r) => setTimeout(r, 200));
    expect(await jobsOf(queue)).toHaveLength(1);
  });
});
