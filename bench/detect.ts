import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue, QueueEvents } from 'bullmq';
import { awsProvider } from '../providers/aws/index.js';
import { providerByName } from '../providers/index.js';
import type { EmulatorHandle } from '../src/provider.js';
import { LocalRedis } from '../src/util/local-redis.js';
import { finish, percentile, printTable, round } from './report.js';

/**
 * bench/detect: how long from a notice becoming visible at the metadata endpoint to its job being stored
 * in Redis, for a real agent process polling a real emulator. The stored time is the Redis stream id of
 * BullMQ's "added" event (Redis's own clock, same machine). Also the agent's idle CPU and RSS at 1 s polls.
 */
const bin = fileURLToPath(new URL('../../bin/spotwatch.js', import.meta.url));

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { rounds: { type: 'string', default: '100' }, 'poll-ms': { type: 'string', default: '250' }, 'idle-seconds': { type: 'string', default: '20' }, providers: { type: 'string' } },
  });
  const rounds = Number(values.rounds);
  const pollMs = Number(values['poll-ms']);
  const idleSeconds = Number(values['idle-seconds']);
  const only = values.providers?.split(',');
  const redis = await LocalRedis.start();
  const work = mkdtempSync(join(tmpdir(), 'spotwatch-bench-'));
  try {
    const results: { scenario: Scenario; samples: number[] }[] = [];
    for (const scenario of SCENARIOS(pollMs)) {
      if (only && !only.includes(scenario.provider)) continue;
      results.push({ scenario, samples: await measure(scenario, redis.url, work, rounds) });
    }
    const idle = await measureIdle(redis.url, work, idleSeconds);
    const target = (s: Scenario) => (s.mechanism === 'hanging GET' ? 20 : s.pollMs + 20);
    process.stdout.write('\nnotice visible → job stored in Redis (ms)\n');
    printTable(
      ['provider', 'mechanism', 'pollMs', 'n', 'p50Ms', 'p99Ms', 'p99/poll', 'target p99 ≤'],
      results.map(({ scenario: sc, samples }) => [sc.provider, sc.mechanism, sc.mechanism === 'hanging GET' ? '—' : sc.pollMs, samples.length, round(percentile(samples, 50), 1), round(percentile(samples, 99), 1), round(percentile(samples, 99) / sc.pollMs, 3), target(sc)]),
    );
    process.stdout.write(`\nagent at 1 s polls (AWS): idle CPU ${round(idle.cpuPct, 3)} % (target < 1 %), RSS ${round(idle.rssMb, 1)} MB (target < 80 MB)\n`);
    const aws = results.find((r) => r.scenario.provider === 'aws')?.samples ?? [];
    const byProvider = Object.fromEntries(results.map(({ scenario: sc, samples }) => [sc.provider, { p50Ms: round(percentile(samples, 50), 1), p99Ms: round(percentile(samples, 99), 1), targetMs: target(sc) }]));
    finish(
      'detect',
      {
        bench: 'detect',
        pollMs,
        p50Ms: round(percentile(aws, 50), 1),
        p99Ms: round(percentile(aws, 99), 1),
        p99OverPoll: round(percentile(aws, 99) / pollMs, 3),
        idleCpuPct: round(idle.cpuPct, 3),
        rssMb: round(idle.rssMb, 1),
        providers: byProvider,
      },
      { samplesMs: Object.fromEntries(results.map((r) => [r.scenario.provider, r.samples])) },
    );
  } finally {
    await redis.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}

function startAgent(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [bin, 'agent', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
}

async function waitForLog(child: ChildProcess, text: string, timeoutMs: number): Promise<void> {
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not log "${text}" within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`agent exited with ${code}:\n${log}`)));
  });
  child.stderr!.resume();
}

async function stopAgent(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function control(emulator: EmulatorHandle, command: string, body: unknown = {}): Promise<Record<string, unknown>> {
  const response = await fetch(`${emulator.controlUrl}/${command}`, { method: 'POST', body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`emulator ${command}: ${response.status} ${await response.text()}`);
  return (await response.json()) as Record<string, unknown>;
}

interface Scenario {
  provider: 'aws' | 'gcp' | 'azure';
  mechanism: string;
  pollMs: number;
  /** Prepares the emulator once. */
  setup?(emulator: EmulatorHandle): Promise<void>;
  /** Makes the notice visible; returns when it became visible (ms since the epoch). */
  fire(emulator: EmulatorHandle, round: number): Promise<number>;
  /** Takes it away again, so the next round is a new change. */
  clear(emulator: EmulatorHandle, round: number): Promise<void>;
}

const SCENARIOS = (pollMs: number): Scenario[] => [
  {
    provider: 'aws',
    mechanism: 'IMDSv2 poll',
    pollMs,
    setup: async (e) => void (await control(e, 'config', { requireToken: true })),
    fire: async (e, i) => Date.parse(((await control(e, 'interrupt', { timeLeft: 120 + i })) as { interruption: { visibleAt: string } }).interruption.visibleAt),
    clear: async (e) => void (await control(e, 'clear-interruption')),
  },
  {
    provider: 'gcp',
    mechanism: 'hanging GET',
    pollMs,
    // The value changes while the control request is handled: taking the time before sending it is conservative.
    fire: async (e) => {
      const before = Date.now();
      await control(e, 'preempt');
      return before;
    },
    clear: async (e) => void (await control(e, 'clear')),
  },
  {
    provider: 'azure',
    mechanism: 'Scheduled Events poll',
    pollMs,
    fire: async (e) => {
      const before = Date.now();
      await control(e, 'schedule', { type: 'Preempt', notBeforeIn: 30 });
      return before;
    },
    clear: async (e) => void (await control(e, 'reset')),
  },
];

async function measure(scenario: Scenario, redisUrl: string, work: string, rounds: number): Promise<number[]> {
  const provider = providerByName(scenario.provider)!;
  const emulator = await provider.startEmulator({ host: '127.0.0.1', port: 0 });
  await scenario.setup?.(emulator);
  const prefix = `bench${scenario.provider}`;
  const queue = new Queue('notices', { connection: { url: redisUrl }, prefix });
  const events = new QueueEvents('notices', { connection: { url: redisUrl }, prefix });
  await events.waitUntilReady();
  const agent = startAgent(
    ['--provider', scenario.provider, '--metadata-endpoint', emulator.url, '--poll-interval', String(scenario.pollMs), '--http-port', '0', '--spool', join(work, `${scenario.provider}.spool`), '--log-level', 'info', '--migrate', 'false'],
    { REDIS_URL: redisUrl, SPOTWATCH_QUEUE_PREFIX: prefix },
  );
  const samples: number[] = [];
  try {
    await waitForLog(agent, 'watching for interruption notices', 20_000);
    for (let i = 0; i < rounds; i++) {
      await scenario.clear(emulator, i);
      // Let the watcher see the cleared state (and its cancellation land), then remove every job so the same
      // notice id can be stored again, and fire at a random phase of the poll cycle.
      await new Promise((r) => setTimeout(r, scenario.pollMs + Math.random() * scenario.pollMs));
      await queue.obliterate({ force: true });
      const added = new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${scenario.provider} round ${i}: no interruption job within 5 s`)), 5000);
        const onAdded = (args: { name: string }, id: string) => {
          if (args.name !== 'interruption') return;
          clearTimeout(timer);
          events.off('added', onAdded);
          resolve(Number(id.split('-')[0]));
        };
        events.on('added', onAdded);
      });
      const visibleAt = await scenario.fire(emulator, i);
      samples.push((await added) - visibleAt);
    }
  } finally {
    await stopAgent(agent);
    await events.close();
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    await emulator.close();
  }
  return samples;
}

/** CPU share (utime+stime over wall time) and resident memory of an agent polling every second. */
async function measureIdle(redisUrl: string, work: string, seconds: number): Promise<{ cpuPct: number; rssMb: number }> {
  const emulator = await awsProvider.startEmulator({ host: '127.0.0.1', port: 0 });
  const agent = startAgent(['--provider', 'aws', '--metadata-endpoint', emulator.url, '--poll-interval', '1000', '--http-port', '0', '--spool', join(work, 'idle.spool'), '--log-level', 'warn', '--migrate', 'false'], {
    REDIS_URL: redisUrl,
    SPOTWATCH_QUEUE_PREFIX: 'benchidle',
  });
  try {
    await new Promise((r) => setTimeout(r, 3000)); // start-up and JIT warm-up are not idle time
    const ticks = () => {
      const fields = readFileSync(`/proc/${agent.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks
    };
    const t0 = ticks();
    const w0 = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpuSeconds = (ticks() - t0) / 100; // USER_HZ is 100 on Linux
    const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    return { cpuPct: (100 * cpuSeconds) / ((Date.now() - w0) / 1000), rssMb: rssKb / 1024 };
  } finally {
    await stopAgent(agent);
    await emulator.close();
  }
}
