import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { loadConfig } from '../config.js';
import { locateCriu } from '../engines/criu/criu-binary.js';
import { createLogger } from '../logger.js';
import type { EmulatorHandle } from '../provider.js';
import { Registry } from '../registry/registry.js';
import type { MigrationRecord } from '../registry/types.js';
import { LocalRedis } from '../util/local-redis.js';
import { awsProviderForDemo } from './demo-provider.js';
import { EXIT, type CliIo } from './io.js';
import { main } from './main.js';

const TOY = fileURLToPath(new URL('../../../examples/toy-llm/toy-llm.mjs', import.meta.url));
const TOY_ARGS = ['--prompt-tokens', '256', '--state-mib', '256', '--tokens', '400', '--interval-ms', '25', '--seed', '42'];

/**
 * The local demo, the whole story on one machine: a throwaway Redis (unless REDIS_URL is set), two nodes —
 * each an AWS metadata emulator plus an agent — and the toy LLM decoding on node A. AWS reclaims node A; the
 * notice reaches the queue, the planner picks node B, CRIU checkpoints the task and streams it to B, B
 * restores it, and generation continues at the next token. Every step is printed with its timing.
 */
export async function demoCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { 'poll-interval': { type: 'string', default: '250' }, 'log-level': { type: 'string', default: 'warn' }, 'post-copy': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    io.stdout.write(
      'usage: spotwatch demo [--poll-interval MS] [--log-level LEVEL] [--post-copy]\n\nRuns Redis (or uses REDIS_URL), two AWS metadata emulators and two agents locally, starts the toy LLM on node A,\nfires a spot interruption and follows the task to node B. The migration part needs root and CRIU 4 (scripts/install.sh).\n' +
        'With --post-copy, node A moves everything but the task\'s memory in the freeze and node B pulls the memory after the\ntask runs there (the toy then runs in a pid namespace of its own).\n',
    );
    return EXIT.ok;
  }
  const say = (line: string) => io.stdout.write(`${line}\n`);
  const work = mkdtempSync(join(tmpdir(), 'spotwatch-demo-'));
  const criu = await locateCriu();
  const canMigrate = criu.ok && process.getuid?.() === 0;
  let redis: LocalRedis | undefined;
  const agents: Agent[] = [];
  const emulators: EmulatorHandle[] = [];
  let registry: Registry | undefined;
  let toyPid: number | undefined;
  try {
    let redisUrl = io.env.REDIS_URL;
    if (redisUrl) {
      say(`• using Redis at ${redisUrl} (REDIS_URL)`);
    } else {
      redis = await LocalRedis.start();
      redisUrl = redis.url;
      say(`• started a throwaway redis-server on ${redisUrl}`);
    }
    const prefix = `demo${process.pid}`;
    const provider = awsProviderForDemo();
    const logger = createLogger({ level: values['log-level'] as 'warn', name: 'spotwatch-agent' });
    let notified: { at: number; latencyMs: number; notice: string } | undefined;

    const startNode = async (nodeId: string, instanceId: string, lifecycle: 'spot' | 'on-demand', zone: string) => {
      const emulator = await provider.startEmulator({ host: '127.0.0.1', port: 0, instanceId });
      emulators.push(emulator);
      await fetch(`${emulator.controlUrl}/identity`, { method: 'POST', body: JSON.stringify({ lifecycle, zone }) });
      await fetch(`${emulator.controlUrl}/config`, { method: 'POST', body: JSON.stringify({ requireToken: true }) });
      const { config } = loadConfig(
        {
          provider: 'aws',
          metadataEndpoint: emulator.url,
          redisUrl,
          queuePrefix: prefix,
          nodeId,
          httpHost: '127.0.0.1',
          httpPort: '0',
          pollIntervalMs: values['poll-interval'],
          spoolPath: join(work, nodeId, 'spool.jsonl'),
          logLevel: values['log-level'],
          migrate: canMigrate ? 'true' : 'false',
          clusterToken: 'demo-cluster-token-not-for-production',
          peerHost: '127.0.0.1',
          peerPort: '0',
          advertiseHost: '127.0.0.1',
          imageDir: join(work, nodeId, 'images'),
          storageDir: join(work, nodeId, 'checkpoints'),
          heartbeatMs: '500',
          postCopy: values['post-copy'] ? 'true' : 'false',
        },
        {},
        'agent',
      );
      const agent = new Agent({
        config,
        provider,
        endpoint: emulator.url,
        logger,
        onDelivered: (notice, _outcome, latencyMs) => {
          if (notice.kind === 'interruption' && !notified) notified = { at: Date.now(), latencyMs, notice: JSON.stringify(notice, null, 2) };
        },
      });
      agents.push(agent);
      await agent.start();
      say(`• node ${nodeId}: ${lifecycle} instance ${instanceId} in ${zone}, IMDSv2 emulator ${emulator.url}, agent polling every ${config.pollIntervalMs} ms`);
      return { emulator, agent };
    };

    const nodeA = await startNode('node-a', 'i-0a1b2c3d4e5f60718', 'spot', 'us-east-1a');
    if (canMigrate) await startNode('node-b', 'i-0b1c2d3e4f5a60718', 'on-demand', 'us-east-1b');
    else say(`• migration part skipped: ${criu.ok ? 'CRIU needs root' : criu.reason} — run "bash scripts/install.sh" as root for the whole story`);

    registry = new Registry(redisUrl, prefix);
    const out = join(work, 'tokens.txt');
    if (canMigrate) {
      const captured: string[] = [];
      const sink = { write: (s: string) => captured.push(s) } as unknown as NodeJS.WritableStream;
      const code = await main(
        ['run', '--id', 'toy-llm', '--node-id', 'node-a', '--redis-url', redisUrl, '--queue-prefix', prefix, '--log', join(work, 'toy.log'), ...(values['post-copy'] ? ['--pid-namespace'] : []), '--', process.execPath, TOY, ...TOY_ARGS, '--out', out],
        { ...io, stdout: sink, stderr: sink, env: { ...io.env, UV_USE_IO_URING: '0' } },
      );
      if (code !== 0) throw new Error(`spotwatch run failed: ${captured.join('')}`);
      toyPid = (JSON.parse(captured.join('')) as { pid: number }).pid;
      say(`• spotwatch run: toy LLM (256 MiB KV cache, 256-token prompt) started on node-a as pid ${toyPid}`);
      await waitUntil(20_000, () => tokens(out).length >= 40);
      const prefillLine = readFileSync(out, 'utf8').split('\n').find((l) => l.startsWith('# prefill'));
      say(`  prefill done (${/ms=(\d+)/.exec(prefillLine ?? '')?.[1] ?? '?'} ms), decoding: ${tokens(out).slice(-3).join(' | ')} …`);
    }

    const fired = (await (await fetch(`${nodeA.emulator.controlUrl}/interrupt`, { method: 'POST', body: JSON.stringify({ action: 'terminate', timeLeft: 120 }) })).json()) as {
      interruption: { visibleAt: string; time: string };
    };
    const visibleAt = Date.parse(fired.interruption.visibleAt);
    say(`• AWS reclaims node-a: spot interruption visible at ${fired.interruption.visibleAt}, instance terminates at ${fired.interruption.time}`);
    await waitUntil(10_000, () => notified !== undefined);
    if (!notified) {
      io.stderr.write('demo: the notice did not reach the queue within 10 s\n');
      return EXIT.failure;
    }
    say(`• notice on the "notices" queue ${notified.at - visibleAt} ms after it became visible (job id = notice id):`);
    say(notified.notice.replace(/^/gm, '    '));
    if (!canMigrate) {
      say(`demo ok: spot interruption → job on Redis in ${notified.at - visibleAt} ms`);
      return EXIT.ok;
    }

    let migration: MigrationRecord | undefined;
    await waitUntil(60_000, async () => {
      const task = await registry!.getTask('toy-llm');
      migration = task?.lastMigrationId ? await registry!.getMigration(task.lastMigrationId) : undefined;
      return migration?.outcome !== undefined;
    });
    if (migration?.outcome !== 'migrated') {
      io.stderr.write(`demo: the migration did not succeed: ${JSON.stringify(migration ?? 'no migration planned')}\n`);
      return EXIT.failure;
    }
    const m = migration;
    const task = await registry.getTask('toy-llm');
    toyPid = task?.pid;
    const ms = (v: number | undefined) => (v === undefined ? '?' : `${Math.round(v)} ms`);
    say(`• planner: node-a draining; target node-b (on-demand, other zone), ${Math.round(m.estimatedBytes / 1048576)} MiB reserved atomically, estimate ${ms(m.estimatedMs)}`);
    if (m.dataPath === 'post-copy') {
      say(`• checkpoint on node-a (post-copy): CRIU froze the task and moved everything but its memory — ${((m.bytesSent - (m.postCopyBytes ?? 0)) / 1048576).toFixed(1)} MiB, dump ${ms(m.phases['source.dump'])}, files ${ms(m.phases['source.transfer'])}`);
    } else {
      say(`• checkpoint on node-a: CRIU dump streamed to node-b while written — ${Math.round(m.bytesSent / 1048576)} MiB, dump+transfer ${ms(m.phases['source.dump'] ?? m.phases['source.transfer'])}`);
    }
    say(`• restore on node-b: receive ${ms(m.phases.receive)}, CRIU restore ${ms(m.phases['target.restore'])}; running again as pid ${m.newPid}`);
    say(`• downtime (frozen on node-a → running on node-b): ${ms(m.downtimeMs)}; deadline margin ${ms(m.marginMs)}`);
    if (m.dataPath === 'post-copy') {
      const pulled = await waitUntil(60_000, async () => (await registry!.getMigration(m.id))?.postCopyBytes !== undefined).then(() => registry!.getMigration(m.id));
      say(`• memory pulled from node-a while the task ran on node-b: ${Math.round((pulled?.postCopyBytes ?? 0) / 1048576)} MiB in ${ms(pulled?.phases['source.postCopyPull'])}; node-a's frozen copy dropped once node-b confirmed every page`);
    }
    await waitUntil(60_000, () => readFileSync(out, 'utf8').includes('# done'));
    const produced = tokens(out);
    const expected = execFileSync(process.execPath, [TOY, '--reference', ...TOY_ARGS], { encoding: 'utf8' }).split('\n').filter((l) => /^\d+ \d+$/.test(l));
    const prefills = (readFileSync(out, 'utf8').match(/^# prefill/gm) ?? []).length;
    const same = produced.length === expected.length && produced.every((t, i) => t === expected[i]);
    say(`• generation continued: ${produced.length} tokens, ${same ? 'identical to an uninterrupted run (no gap, no repeat)' : 'DIFFERENT from an uninterrupted run'}; prefill ran ${prefills} time${prefills === 1 ? '' : 's'}`);
    say(`demo ${same && prefills === 1 ? 'ok' : 'FAILED'}: notice ${notified.at - visibleAt} ms → migrated with ${ms(m.downtimeMs)} downtime, ${ms(m.marginMs)} before the deadline`);
    return same && prefills === 1 ? EXIT.ok : EXIT.failure;
  } finally {
    for (const agent of agents) await agent.stop();
    for (const emulator of emulators) await emulator.close();
    if (toyPid) {
      try {
        process.kill(toyPid, 'SIGKILL');
      } catch {
        // finished already
      }
    }
    await registry?.close();
    await redis?.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}

function tokens(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => /^\d+ \d+$/.test(l)) : [];
}

async function waitUntil(timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !(await check())) await new Promise((r) => setTimeout(r, 50));
}
