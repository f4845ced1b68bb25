import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { providerByName } from '../../providers/index.js';
import type { EmulatorHandle } from '../provider.js';
import { Registry } from '../registry/registry.js';

/**
 * Several "nodes" on one machine for end-to-end tests and benchmarks: each node is an AWS metadata emulator
 * plus a real `spotwatch agent` process with its own node id, image directory and peer port, all sharing one
 * Redis under one key prefix.
 */
export interface LocalNode {
  id: string;
  emulator: EmulatorHandle;
  agent: ChildProcess;
  log(): string;
}

export interface LocalClusterOptions {
  redisUrl: string;
  /** How to start the CLI: the command and the arguments before `agent` (e.g. node + bin/spotwatch.js). */
  cli: { command: string; args: string[] };
  /** Parent of every node's directories (image dirs live here: tmpfs is fastest). */
  baseDir?: string;
  env?: NodeJS.ProcessEnv;
  logLevel?: string;
}

export const LOCAL_CLUSTER_TOKEN = 'local-cluster-token-0123456789abcdef';

export class LocalCluster {
  readonly prefix = `lc${randomBytes(3).toString('hex')}`;
  readonly dir: string;
  readonly registry: Registry;
  readonly nodes = new Map<string, LocalNode>();

  constructor(private readonly o: LocalClusterOptions) {
    this.dir = mkdtempSync(join(o.baseDir ?? tmpdir(), 'spotwatch-cluster-'));
    this.registry = new Registry(o.redisUrl, this.prefix);
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, ...this.o.env, REDIS_URL: this.o.redisUrl, SPOTWATCH_QUEUE_PREFIX: this.prefix };
  }

  async startNode(
    id: string,
    options: {
      lifecycle?: 'spot' | 'on-demand';
      zone?: string;
      extraArgs?: string[];
      /** Wraps the agent's command line (e.g. to run it in its own mount namespace). */
      launch?: (command: string, args: string[]) => { command: string; args: string[] };
    } = {},
  ): Promise<LocalNode> {
    const emulator = await providerByName('aws')!.startEmulator({ host: '127.0.0.1', port: 0, instanceId: `i-0${randomBytes(8).toString('hex')}` });
    await fetch(`${emulator.controlUrl}/identity`, { method: 'POST', body: JSON.stringify({ lifecycle: options.lifecycle ?? 'spot', zone: options.zone ?? 'us-east-1a' }) });
    const nodeDir = join(this.dir, id);
    mkdirSync(nodeDir, { recursive: true });
    const commandLine = {
      command: this.o.cli.command,
      args: [
        ...this.o.cli.args,
        'agent', '--provider', 'aws', '--metadata-endpoint', emulator.url, '--node-id', id, '--http-port', '0', '--poll-interval', '100',
        '--cluster-token', LOCAL_CLUSTER_TOKEN, '--peer-host', '127.0.0.1', '--peer-port', '0', '--advertise-host', '127.0.0.1',
        '--image-dir', join(nodeDir, 'images'), '--storage-dir', join(nodeDir, 'storage'), '--spool', join(nodeDir, 'spool.jsonl'),
        '--heartbeat-interval', '300', '--log-level', this.o.logLevel ?? 'info', ...(options.extraArgs ?? []),
      ],
    };
    const launched = options.launch ? options.launch(commandLine.command, commandLine.args) : commandLine;
    const agent = spawn(launched.command, launched.args, { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    agent.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const node: LocalNode = { id, emulator, agent, log: () => log };
    this.nodes.set(id, node);
    const deadline = Date.now() + 30_000;
    while (!(log.includes('migration runtime ready') && log.includes('watching for interruption notices'))) {
      if (agent.exitCode !== null) throw new Error(`agent ${id} exited with ${agent.exitCode}:\n${log}`);
      if (Date.now() > deadline) throw new Error(`agent ${id} not ready after 30 s:\n${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return node;
  }

  /** Fires a spot interruption on `nodeId`'s emulator; returns when it became visible. */
  async interrupt(nodeId: string, timeLeftSeconds = 120): Promise<number> {
    const response = await fetch(`${this.nodes.get(nodeId)!.emulator.controlUrl}/interrupt`, { method: 'POST', body: JSON.stringify({ timeLeft: timeLeftSeconds }) });
    const body = (await response.json()) as { interruption: { visibleAt: string } };
    return Date.parse(body.interruption.visibleAt);
  }

  async close(): Promise<void> {
    for (const node of this.nodes.values()) {
      node.agent.kill('SIGKILL');
      await node.emulator.close();
    }
    for (const task of await this.registry.listTasks().catch(() => [])) {
      try {
        process.kill(task.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await this.registry.redis.eval(`for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end`, 0, `${this.prefix}:*`).catch(() => {});
    await this.registry.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
