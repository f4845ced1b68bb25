import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Agent, type AgentDeps } from '../../src/agent/agent.js';
import { loadConfig, type Config, type ConfigKey } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import type { CloudProvider, EmulatorHandle, EmulatorOptions } from '../../src/provider.js';
import { NOTICES_QUEUE_NAME } from '../../src/queue/notice-queue.js';
import { awsProvider } from '../../providers/aws/index.js';

/** A real agent (in this process) against a real emulator of its cloud and a real Redis, with its own queue prefix. */
export interface AgentHarness {
  emulator: EmulatorHandle;
  config: Config;
  prefix: string;
  workDir: string;
  /** `deps`: extra agent dependencies (a boot clock that plays a reboot, a logger whose lines a test reads). */
  startAgent(overrides?: Partial<Record<string, string>>, deps?: Partial<Pick<AgentDeps, 'bootClock' | 'logger'>>): Promise<Agent>;
  control(command: string, body?: unknown): Promise<Record<string, unknown>>;
  jobs(): Promise<{ id: string; data: Record<string, unknown>; timestamp: number }[]>;
  close(): Promise<void>;
}

/** The harness of `awsAgentHarness`. */
export type AwsAgentHarness = AgentHarness;

export interface AgentHarnessOptions {
  /** Passed to the provider's emulator (e.g. its instance id). */
  emulator?: Omit<EmulatorOptions, 'host' | 'port'>;
  /** Config options on top of the harness's own (emulator endpoint, Redis, prefix, node-a, silent logs, no migration). */
  config?: Partial<Record<ConfigKey, string>>;
}

export async function agentHarness(provider: CloudProvider, redisUrl: string, options: AgentHarnessOptions = {}): Promise<AgentHarness> {
  const emulator = await provider.startEmulator({ host: '127.0.0.1', port: 0, ...options.emulator });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const workDir = mkdtempSync(join(tmpdir(), 'spotwatch-test-'));
  const agents: Agent[] = [];
  const inputs: Partial<Record<ConfigKey, string>> = {
    provider: provider.name,
    metadataEndpoint: emulator.url,
    redisUrl,
    queuePrefix: prefix,
    nodeId: 'node-a',
    httpHost: '127.0.0.1',
    httpPort: '0',
    spoolPath: join(workDir, 'spool.jsonl'),
    logLevel: 'silent',
    migrate: 'false',
    ...options.config,
  };
  const { config } = loadConfig(inputs, {});
  const queue = new Queue(NOTICES_QUEUE_NAME, { connection: { url: redisUrl }, prefix });
  return {
    emulator,
    config,
    prefix,
    workDir,
    async startAgent(overrides = {}, deps = {}) {
      const { config: effective } = loadConfig({ ...inputs, ...overrides }, {});
      const agent = new Agent({ config: effective, provider, endpoint: effective.metadataEndpoint ?? emulator.url, ...deps, logger: deps.logger ?? silentLogger });
      agents.push(agent);
      await agent.start();
      return agent;
    },
    control: (command, body = {}) => control(emulator, command, body),
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

export function awsAgentHarness(redisUrl: string, options: { pollIntervalMs?: number; requestTimeoutMs?: number } = {}): Promise<AgentHarness> {
  return agentHarness(awsProvider, redisUrl, {
    emulator: { instanceId: 'i-0123456789abcdef0' },
    config: { pollIntervalMs: String(options.pollIntervalMs ?? 100), requestTimeoutMs: String(options.requestTimeoutMs ?? 300) },
  });
}

/** POSTs one command (JSON body) to an emulator's control API; gives its JSON answer, throws on an error status. */
export async function control(emulator: EmulatorHandle, command: string, body: unknown = {}): Promise<Record<string, unknown>> {
  const response = await fetch(`${emulator.controlUrl}/${command}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await response.json()) as Record<string, unknown>;
  if (!response.ok) throw new Error(`emulator ${command}: ${response.status} ${JSON.stringify(json)}`);
  return json;
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
