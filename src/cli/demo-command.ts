import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { loadConfig } from '../config.js';
import { CONTROL_PREFIX } from '../emulator/emulator-server.js';
import { createLogger } from '../logger.js';
import { LocalRedis } from '../util/local-redis.js';
import { awsProviderForDemo } from './demo-provider.js';
import { EXIT, type CliIo } from './io.js';

/**
 * The local demo: a throwaway Redis (unless REDIS_URL is set), the AWS metadata emulator and an agent, all on
 * this machine; fires a spot interruption and shows the notice arriving on the queue with its latency.
 */
export async function demoCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { 'poll-interval': { type: 'string', default: '250' }, 'log-level': { type: 'string', default: 'warn' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    io.stdout.write('usage: spotwatch demo [--poll-interval MS] [--log-level LEVEL]\n\nRuns Redis (or uses REDIS_URL), the AWS metadata emulator and an agent locally, fires a spot interruption\nand shows the notice arriving on the notices queue.\n');
    return EXIT.ok;
  }
  const say = (line: string) => io.stdout.write(`${line}\n`);
  const work = mkdtempSync(join(tmpdir(), 'spotwatch-demo-'));
  let redis: LocalRedis | undefined;
  let agent: Agent | undefined;
  let emulator: { url: string; controlUrl: string; close(): Promise<void> } | undefined;
  try {
    let redisUrl = io.env.REDIS_URL;
    if (redisUrl) {
      say(`• using Redis at ${redisUrl} (REDIS_URL)`);
    } else {
      redis = await LocalRedis.start();
      redisUrl = redis.url;
      say(`• started a throwaway redis-server on ${redisUrl}`);
    }
    const provider = awsProviderForDemo();
    emulator = await provider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: 'i-0demo1234567890ab' });
    say(`• AWS metadata emulator (IMDSv2) on ${emulator.url}`);
    const { config } = loadConfig(
      {
        provider: 'aws',
        metadataEndpoint: emulator.url,
        redisUrl,
        queuePrefix: `demo${process.pid}`,
        nodeId: 'demo-node-a',
        httpHost: '127.0.0.1',
        httpPort: '0',
        pollIntervalMs: values['poll-interval'],
        spoolPath: join(work, 'spool.jsonl'),
        logLevel: values['log-level'],
        migrate: 'false',
      },
      {},
    );
    const logger = createLogger({ level: config.logLevel, name: 'spotwatch-agent' });
    let resolveDelivered: (v: { noticeJson: string; latencyMs: number }) => void = () => {};
    const delivered = new Promise<{ noticeJson: string; latencyMs: number }>((resolve) => {
      resolveDelivered = resolve;
    });
    agent = new Agent({
      config,
      provider,
      endpoint: emulator.url,
      logger,
      onDelivered: (notice, outcome) => {
        if (notice.kind === 'interruption') resolveDelivered({ noticeJson: JSON.stringify(notice, null, 2), latencyMs: Date.now() });
        void outcome;
      },
    });
    await agent.start();
    say(`• agent ${agent.nodeId} watching ${agent.identity?.instanceId} (${agent.identity?.instanceType}, ${agent.identity?.lifecycle}) every ${config.pollIntervalMs} ms; metrics on http://127.0.0.1:${agent.httpPort}/metrics`);

    const fired = await fetch(`${emulator.controlUrl}/interrupt`, { method: 'POST', body: JSON.stringify({ action: 'terminate', timeLeft: 120 }) });
    const firedBody = (await fired.json()) as { interruption: { visibleAt: string; time: string } };
    const visibleAt = Date.parse(firedBody.interruption.visibleAt);
    say(`• AWS reclaims the spot instance: interruption visible at ${firedBody.interruption.visibleAt}, instance terminates at ${firedBody.interruption.time}`);

    const result = await Promise.race([delivered, new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000).unref())]);
    if (!result) {
      io.stderr.write('demo: the notice did not reach the queue within 10 s — see the agent log above\n');
      return EXIT.failure;
    }
    const latency = result.latencyMs - visibleAt;
    say(`• notice on the "notices" queue (job id = notice id) ${latency} ms after it became visible:`);
    say(result.noticeJson.replace(/^/gm, '    '));
    const metrics = await (await fetch(`http://127.0.0.1:${agent.httpPort}/metrics`)).text();
    const counted = metrics.split('\n').find((l) => l.startsWith('spotwatch_notices_total{'));
    say(`• metrics: ${counted ?? 'spotwatch_notices_total missing'}`);
    say(`demo ok: spot interruption → job on Redis in ${latency} ms (poll interval ${config.pollIntervalMs} ms; control API was ${CONTROL_PREFIX})`);
    return EXIT.ok;
  } finally {
    await agent?.stop();
    await emulator?.close();
    await redis?.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}
