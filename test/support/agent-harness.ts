import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Agent } from '../../src/agent/agent.js';
import { loadConfig, type Config } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { NOTICES_QUEUE_NAME } from '../../src/queue/notice-queue.js';
import { awsProvider } from '../../providers/aws/index.js';

/** A real agent (in this process) against a real AWS emulator and a real Redis, with its own queue prefix. */
export interface AwsAgentHarness {
  emulator: EmulatorHandle;
  config: Config;
  prefix: string;
  workDir: string;
  startAgent(overrides?: Partial<Record<string, string>>): Promise<Agent>;
  control(command: string, body?: unknown): Promise<Record<string, unknown>>;
  jobs(): Promise<{ id: string; data: Record<string, unknown>; timestamp: number }[]>;
  close(): Promise<void>;
}

export async function awsAgentHarness(redisUrl: string, options: { pollIntervalMs?: number; requestTimeoutMs?: number } = {}): Promise<AwsAgentHarness> {
  const emulator = await awsProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: 'i-0123456789abcdef0' });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const workDir = mkdtempSync(join(tmpdir(), 'spotwatch-test-'));
  const agents: Agent[] = [];
  const inputs = {
    provider: 'aws',
    metadataEndpoint: emulator.url,
    redisUrl,
    queuePrefix: prefix,
    nodeId: 'node-a',
    httpHost: '127.0.0.1',
    httpPort: '0',
    pollIntervalMs: String(options.pollIntervalMs ?? 100),
    requestTimeoutMs: String(options.requestTimeoutMs ?? 300),
    spoolPath: join(workDir, 'spool.jsonl'),
    logLevel: 'silent',
    migrate: 'false',
  };
  const { config } = loadConfig(inputs, {});
  const queue = new Queue(NOTICES_QUEUE_NAME, { connection: { url: redisUrl }, prefix });
  return {
    emulator,
    config,
    prefix,
    workDir,
    async startAgent(overrides = {}) {
      const { config: effective } = loadConfig({ ...inputs, ...overrides }, {});
      const agent = new Agent({ config: effective, provider: awsProvider, endpoint: effective.metadataEndpoint ?? emulator.url, logger: silentLogger });
      agents.push(agent);
      await agent.start();
      return agent;
    },
    async control(command, body = {}) {
      const response = await fetch(`${emulator.controlUrl}/${command}`, { method: 'POST', body: JSON.stringify(body) });
      const json = (await response.json()) as Record<string, unknown>;
      if (!response.ok) throw new Error(`emulator ${command}: ${response.status} ${JSON.stringify(json)}`);
      return json;
    },
    async jobs() {
      const jobs = await queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized']);
      return jobs.map((j) => ({ id: j.id!, data: j.data as Record<string, unknown>, timestamp: j.timestamp }));
    },
    async close() {
      for (const agent of agents) await agent.stop();
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
      await emulator.close();
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}

/** Polls `check` every 10 ms until it returns a value or `timeoutMs` passes (then throws with `what`). */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
