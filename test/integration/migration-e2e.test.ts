/**
 * End to end, with real parts only: real redis-server, real `spotwatch agent` processes (one per node, each
 * with its own AWS metadata emulator and image directory), real CRIU, and the toy LLM started with
 * `spotwatch run`. A spot interruption on node A must move the task to another node, where its token stream
 * continues exactly as an uninterrupted run would: no gap, no repeat, prefill once.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { LocalCluster } from '../../src/dev/local-cluster.js';
import { freePort } from '../../src/util/free-port.js';
import { locateCriu } from '../../src/engines/criu/criu-binary.js';
import { expectRepeatsButNoGap } from '../support/token-stream.js';
import type { Registry } from '../../src/registry/registry.js';
import type { MigrationRecord, TaskRecord } from '../../src/registry/types.js';
import { waitFor } from '../support/agent-harness.js';
import { runCli } from '../support/spawn-cli.js';

const redisUrl = inject('redisUrl');
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TOY = join(ROOT, 'examples/toy-llm/toy-llm.mjs');

const criu = await locateCriu();
const ready = criu.ok && process.getuid?.() === 0;
if (!ready && process.env.CI) throw new Error(`CRIU is required for the migration tests under CI: ${criu.ok ? 'not root' : criu.reason}`);

const entry = fileURLToPath(new URL('../../src/cli/run.ts', import.meta.url));

interface ToyOptions {
  id: string;
  stateMib: number;
  tokens: number;
  intervalMs: number;
  fallback?: string;
  outDir?: string;
  /** More toy arguments (e.g. --weights-mib, --control-port). */
  toyArgs?: string[];
  /** More `spotwatch run` arguments (e.g. --prepare-url). */
  runArgs?: string[];
}

interface Cluster extends LocalCluster {
  runToy(nodeId: string, options: ToyOptions): Promise<{ out: string; args: string[] }>;
}

async function cluster(): Promise<Cluster> {
  const c = new LocalCluster({ redisUrl, cli: { command: process.execPath, args: ['--import', 'tsx', entry] }, env: { UV_USE_IO_URING: '0' } });
  return Object.assign(c, {
    async runToy(nodeId: string, o: ToyOptions) {
      const out = join(o.outDir ?? c.dir, `${o.id}.tokens`);
      const args = ['--prompt-tokens', '64', '--state-mib', String(o.stateMib), '--tokens', String(o.tokens), '--interval-ms', String(o.intervalMs), '--seed', '11', ...(o.toyArgs ?? [])];
      const result = await runCli(
        ['run', '--id', o.id, '--node-id', nodeId, '--fallback', o.fallback ?? 'checkpoint-to-storage', '--log', join(c.dir, `${o.id}.log`), ...(o.runArgs ?? []), '--', process.execPath, TOY, ...args, '--out', out],
        { env: { REDIS_URL: redisUrl, SPOTWATCH_QUEUE_PREFIX: c.prefix, UV_USE_IO_URING: '0' } },
      );
      expect(result.code, result.stderr).toBe(0);
      await waitFor(`${o.id} to finish prefill and decode a few tokens`, 20_000, () => (existsSync(out) && readFileSync(out, 'utf8').split('\n').filter((l) => /^\d+ /.test(l)).length >= 10 ? true : undefined));
      return { out, args };
    },
  });
}

/** A cluster with node-a (the one to be reclaimed) and node-b in another zone, both agents ready. */
async function twoNodes(nodeB: { extraArgs?: string[] } = {}): Promise<Cluster> {
  const c = await cluster();
  await c.startNode('node-a');
  await c.startNode('node-b', { zone: 'us-east-1b', ...nodeB });
  return c;
}

/** A free port for the toy's control endpoints, and their base URL. */
async function controlEndpoint(): Promise<{ port: number; base: string }> {
  const port = await freePort();
  return { port, base: `http://127.0.0.1:${port}` };
}

function tokenLines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => /^\d+ \d+$/.test(l));
}

function reference(args: string[]): string[] {
  return execFileSync(process.execPath, [TOY, '--reference', ...args], { encoding: 'utf8' }).split('\n').filter((l) => /^\d+ \d+$/.test(l));
}

async function migrationOf(registry: Registry, taskId: string): Promise<MigrationRecord | undefined> {
  const task = await registry.getTask(taskId);
  return task?.lastMigrationId ? registry.getMigration(task.lastMigrationId) : undefined;
}

/** The task's last migration, once it has an outcome. */
function migrationReported(c: Cluster, taskId: string, timeoutMs = 60_000): Promise<MigrationRecord> {
  return waitFor('the migration to be reported', timeoutMs, async () => {
    const m = await migrationOf(c.registry, taskId);
    return m?.outcome ? m : undefined;
  });
}

/** A line of an agent's Prometheus text (its ops server's port is in its log), e.g. `spotwatch_task_stages_total{outcome="delivered"}`. */
async function agentMetric(c: Cluster, nodeId: string, series: string): Promise<number | undefined> {
  const port = /"port":(\d+)[^\n]*ops server listening/.exec(c.nodes.get(nodeId)!.log())?.[1];
  if (!port) throw new Error(`no ops server port in ${nodeId}'s log`);
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * The toy ran to its end as an uninterrupted run would: its first `tokens` tokens are the reference's and it ran
 * prefill once. Returns its whole output, for further checks.
 */
async function expectUninterruptedRun(toy: { out: string; args: string[] }, tokens: number): Promise<string> {
  await toyFinished(toy.out);
  const text = readFileSync(toy.out, 'utf8');
  expect(tokenLines(toy.out)).toEqual(reference(toy.args).slice(0, tokens));
  expect(text.match(/^# prefill \d+/gm)).toEqual(['# prefill 1']);
  return text;
}

/** The (restored) toy has written its last token. */
function toyFinished(out: string, timeoutMs = 30_000): Promise<true> {
  return waitFor('the restored task to finish', timeoutMs, () => (readFileSync(out, 'utf8').includes('# done') ? true : undefined));
}

describe.skipIf(!ready)('migration end to end (real CRIU, real agents)', { timeout: 90_000 }, () => {
  let c: Cluster | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('moves the toy LLM from a reclaimed spot node to a healthy node, continuing at the next token', async () => {
    c = await twoNodes();
    const toy = await c.runToy('node-a', { id: 'toy-1', stateMib: 64, tokens: 250, intervalMs: 20 });
    await c.interrupt('node-a');
    const task = await waitFor('the task to run on node-b', 60_000, async () => {
      const t = await c!.registry.getTask('toy-1');
      return t?.nodeId === 'node-b' && t.state === 'running' ? t : undefined;
    });
    const migration = await migrationReported(c, 'toy-1', 5000);
    expect(migration).toMatchObject({ outcome: 'migrated', sourceNodeId: 'node-a', targetNodeId: 'node-b', phase: 'done' });
    expect(migration.dataPath).toMatch(/^(relay|direct channel)/); // streamed, not through a directory
    expect(migration.downtimeMs).toBeGreaterThan(0);
    expect(migration.marginMs).toBeGreaterThan(100_000);
    expect((await c.registry.getNode('node-a'))?.draining).toBe(true);
    await expectUninterruptedRun(toy, 250);
    expect(task.pid).toBeGreaterThan(0);
    // CRIU's logs stay with each migration; the image data itself is gone.
    const sourceDir = join(c.dir, 'node-a', 'images', `${migration.id}-source-1`);
    const targetDir = join(c.dir, 'node-b', 'images', migration.id);
    expect(readdirSync(sourceDir)).toContain('dump.log');
    expect(readdirSync(targetDir)).toEqual(expect.arrayContaining(['restore.log', 'page-server.log']));
    expect(readdirSync(targetDir).filter((f) => f.endsWith('.img'))).toEqual([]);
    const status = await runCli(['status', '--redis-url', redisUrl, '--queue-prefix', c.prefix]);
    expect(status.stdout).toMatch(/toy-1 .*node-a → node-b .*migrated/);
  });

  it('a target with --lazy-restore runs the task before its memory is in place (post-copy): same tokens, the fill recorded', async () => {
    c = await twoNodes({ extraArgs: ['--lazy-restore', 'true'] });
    const toy = await c.runToy('node-a', { id: 'toy-lazy', stateMib: 128, tokens: 250, intervalMs: 20 });
    await c.interrupt('node-a');
    const migration = await migrationReported(c, 'toy-lazy');
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-b' });
    expect(migration.phases['target.lazyPagesStart']).toBeGreaterThan(0);
    expect(migration.phases['target.memoryFill']).toBeGreaterThan(0);
    // The task ran again before its memory was all there: downtime ends at the restore, not after the fill.
    expect(migration.downtimeMs!).toBeLessThan(migration.finishedAt! - migration.frozenAt!);
    await expectUninterruptedRun(toy, 250);
  });

  it('a source with --post-copy moves everything but the memory in the freeze; the target runs the task and pulls the rest: same tokens', async () => {
    c = await cluster();
    await c.startNode('node-a', { extraArgs: ['--post-copy', 'true'] });
    await c.startNode('node-b', { zone: 'us-east-1b' });
    // Its own pid namespace, as in a container: the source holds its pids until the memory has moved.
    const toy = await c.runToy('node-a', { id: 'toy-postcopy', stateMib: 128, tokens: 250, intervalMs: 20, runArgs: ['--pid-namespace'] });
    await c.interrupt('node-a');
    const migration = await migrationReported(c, 'toy-postcopy');
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-b', dataPath: 'post-copy' });
    expect(migration.phases['target.memoryFill']).toBeGreaterThan(0);
    // The freeze carried a few MiB; the 128 MiB of state followed after the task ran on node-b.
    const pulled = await waitFor('the source to record the pulled memory', 10_000, async () => (await c!.registry.getMigration(migration.id))?.phases['source.postCopyPull']);
    expect(pulled).toBeGreaterThan(0);
    expect((await c.registry.getMigration(migration.id))!.bytesSent).toBeGreaterThan(128 * 1048576);
    expect(migration.downtimeMs!).toBeLessThan(migration.finishedAt! - migration.frozenAt!);
    await expectUninterruptedRun(toy, 250);
  });

  it('a post-copy whose target loses its page daemon leaves the task running on the source, recorded there, nothing missing', async () => {
    c = await cluster();
    await c.startNode('node-a', { extraArgs: ['--post-copy', 'true'] });
    await c.startNode('node-b', { zone: 'us-east-1b' });
    const toy = await c.runToy('node-a', { id: 'toy-postcopy-lost', stateMib: 256, tokens: 400, intervalMs: 20, runArgs: ['--pid-namespace'] });
    const before = await c.registry.getTask('toy-postcopy-lost');
    // node-b's lazy-pages daemon is killed as soon as it appears: node-b cannot get the memory.
    const targetImages = join(c.dir, 'node-b', 'images');
    const killer = setInterval(() => {
      try {
        execFileSync('pkill', ['-KILL', '-f', `lazy-pages -D ${targetImages}`]);
      } catch {
        // not there (yet)
      }
    }, 2);
    try {
      await c.interrupt('node-a');
      const migration = await migrationReported(c, 'toy-postcopy-lost');
      expect(migration.outcome).toBe('failed');
      expect(migration.reason).toMatch(/post-copy/);
      const task = await waitFor('the task to be recorded on node-a again', 20_000, async () => {
        const t = await c!.registry.getTask('toy-postcopy-lost');
        return t?.nodeId === 'node-a' && t.state === 'running' ? t : undefined;
      });
      expect(task.pid).toBe(before!.pid);
    } finally {
      clearInterval(killer);
    }
    // It decodes on node-a: every line is the uninterrupted run's (a target copy may have written some, which the
    // source writes again), and no token is missing.
    const count = tokenLines(toy.out).length;
    await waitFor('the task to decode on node-a again', 10_000, () => (tokenLines(toy.out).length > count + 5 ? true : undefined));
    expectRepeatsButNoGap(tokenLines(toy.out), reference(toy.args));
  });

  it('a task that cooperates releases its weights before the checkpoint and rebuilds them after the restore: fewer bytes, same tokens', async () => {
    c = await twoNodes();
    const { port, base } = await controlEndpoint();
    const toy = await c.runToy('node-a', {
      id: 'toy-coop',
      stateMib: 16,
      tokens: 250,
      intervalMs: 20,
      toyArgs: ['--weights-mib', '128', '--control-port', String(port)],
      runArgs: ['--prepare-url', `${base}/prepare`, '--resume-url', `${base}/resume`, '--releasable-mib', '128'],
    });
    expect((await c.registry.getTask('toy-coop'))?.control).toEqual({ prepareUrl: `${base}/prepare`, resumeUrl: `${base}/resume`, releasableBytes: 128 * 1024 * 1024 });
    await c.interrupt('node-a');
    const migration = await migrationReported(c, 'toy-coop');
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-b' });
    // 16 MiB of cache plus the runtime moved; the 128 MiB of weights did not — and the plan knew it.
    expect(migration.bytesSent).toBeLessThan(100 * 1024 * 1024);
    expect(migration.estimatedBytes).toBeLessThan(128 * 1024 * 1024);
    const text = await expectUninterruptedRun(toy, 250);
    const prepared = /^# prepare at token (\d+) released=(\d+)$/m.exec(text);
    const resumed = /^# resume at token (\d+) /m.exec(text);
    expect(prepared?.[2]).toBe(String(128 * 1024 * 1024));
    expect(resumed?.[1]).toBe(prepared?.[1]); // not a token between the two
    expect(text.indexOf('# prepare')).toBeLessThan(text.indexOf('# resume'));
  });

  it('a task that stages its cache ahead of the checkpoint moves only what changed since inside the frozen window', async () => {
    c = await twoNodes();
    const { port, base } = await controlEndpoint();
    const toy = await c.runToy('node-a', {
      id: 'toy-stage',
      stateMib: 128,
      tokens: 250,
      intervalMs: 20,
      toyArgs: ['--control-port', String(port)],
      runArgs: ['--prepare-url', `${base}/prepare`, '--resume-url', `${base}/resume`, '--stage-url', `${base}/stage`, '--staged-mib', '128', '--releasable-mib', '128'],
    });
    expect((await c.registry.getTask('toy-stage'))?.control).toMatchObject({ stageUrl: `${base}/stage`, stagedBytes: 128 * 1024 * 1024 });
    await c.interrupt('node-a');
    const migration = await migrationReported(c, 'toy-stage');
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-b', stagedBytes: 128 * 1024 * 1024 });
    // The 128 MiB cache went ahead of the freeze; the checkpoint carried the runtime and the journal of later writes.
    expect(migration.bytesSent).toBeLessThan(100 * 1024 * 1024);
    expect(migration.phases['source.stage']).toBeGreaterThanOrEqual(0);
    expect(migration.phases['source.stageSend']).toBeGreaterThan(0);
    expect(await agentMetric(c, 'node-a', 'spotwatch_task_stages_total{outcome="delivered"}')).toBe(1);
    await toyFinished(toy.out);
    const text = readFileSync(toy.out, 'utf8');
    // Tokens sample the whole cache: a staged copy or a journal replay that was off by one write would show.
    expect(tokenLines(toy.out)).toEqual(reference(toy.args).slice(0, 250));
    expect(text.match(/^# prefill \d+/gm)).toEqual(['# prefill 1']);
    const staged = /^# stage at token (\d+) bytes=(\d+)/m.exec(text);
    const prepared = /^# prepare at token (\d+) released=(\d+)$/m.exec(text);
    const resumed = /^# resume at token (\d+) pid=\d+ rebuilt-ms=\d+ staged=(\d+)$/m.exec(text);
    expect(staged?.[2]).toBe(String(128 * 1024 * 1024));
    expect(Number(staged?.[1])).toBeLessThanOrEqual(Number(prepared?.[1]));
    expect(prepared?.[2]).toBe(String(128 * 1024 * 1024));
    expect(resumed?.[1]).toBe(prepared?.[1]);
    expect(resumed?.[2]).toBe(String(128 * 1024 * 1024));
    // Neither node keeps the staged files once the task runs again.
    for (const node of ['node-a', 'node-b']) expect(readdirSync(join(c.dir, node, 'images')).filter((f) => /\.stag(e|ed)$/.test(f))).toEqual([]);
  });

  it('a stage that fails costs nothing but time: the checkpoint moves everything and the tokens are the same', async () => {
    c = await twoNodes();
    const { port, base } = await controlEndpoint();
    const toy = await c.runToy('node-a', {
      id: 'toy-stage-404',
      stateMib: 32,
      tokens: 200,
      intervalMs: 20,
      toyArgs: ['--control-port', String(port)],
      // The toy serves no /stage-everything: it answers 404.
      runArgs: ['--prepare-url', `${base}/prepare`, '--resume-url', `${base}/resume`, '--stage-url', `${base}/stage-everything`],
    });
    await c.interrupt('node-a');
    const migration = await migrationReported(c, 'toy-stage-404');
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-b' });
    expect(migration.stagedBytes).toBeUndefined();
    expect(migration.bytesSent).toBeGreaterThan(32 * 1024 * 1024);
    expect(c.nodes.get('node-a')!.log()).toMatch(/staging failed; the checkpoint moves everything/);
    expect(await agentMetric(c, 'node-a', 'spotwatch_task_stages_total{outcome="stage-failed"}')).toBe(1);
    await toyFinished(toy.out);
    expect(tokenLines(toy.out)).toEqual(reference(toy.args).slice(0, 200));
    expect(readFileSync(toy.out, 'utf8')).toMatch(/^# resume at token \d+ pid=\d+ rebuilt-ms=\d+ staged=0$/m);
  });

  it('applies and reports the fallback when no healthy target exists', async () => {
    c = await cluster();
    await c.startNode('node-a');
    const toy = await c.runToy('node-a', { id: 'toy-alone', stateMib: 16, tokens: 2000, intervalMs: 20, fallback: 'stop' });
    void toy;
    await c.interrupt('node-a');
    const migration = await waitFor('the fallback to be applied', 20_000, async () => {
      const m = await migrationOf(c!.registry, 'toy-alone');
      return m?.outcome ? m : undefined;
    }).catch((err: Error) => {
      throw new Error(`${err.message}\n${c!.nodes.get('node-a')!.log().slice(-3000)}`);
    });
    expect(migration).toMatchObject({ outcome: 'fallback-applied', fallback: 'stop', phase: 'fallback' });
    expect(migration.reason).toMatch(/no-target/);
    const task = (await c.registry.getTask('toy-alone')) as TaskRecord;
    expect(task.state).toBe('stopped');
    expect(() => process.kill(task.pid, 0)).toThrow();
    expect(c.nodes.get('node-a')!.log()).toMatch(/applying its fallback/);
  });

  it('checkpoints to storage when no target exists, and `spotwatch restore` brings the task back later, losing nothing', async () => {
    c = await cluster();
    await c.startNode('node-a');
    const toy = await c.runToy('node-a', { id: 'toy-saved', stateMib: 32, tokens: 300, intervalMs: 20, fallback: 'checkpoint-to-storage' });
    await c.interrupt('node-a');
    const migration = await waitFor('the fallback to be applied', 20_000, async () => {
      const m = await migrationOf(c!.registry, 'toy-saved');
      return m?.outcome ? m : undefined;
    });
    expect(migration).toMatchObject({ outcome: 'fallback-applied', fallback: 'checkpoint-to-storage', phase: 'fallback' });
    expect((await c.registry.getTask('toy-saved'))?.state).toBe('checkpointed');
    const stoppedAt = tokenLines(toy.out).length;
    // Later, on a healthy node with the same storage mounted:
    const restored = await runCli(['restore', '--migration', migration.id, '--node-id', 'node-z', '--storage-dir', join(c.dir, 'node-a', 'storage')], {
      env: { REDIS_URL: redisUrl, SPOTWATCH_QUEUE_PREFIX: c.prefix },
    });
    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout)).toMatchObject({ task: 'toy-saved', nodeId: 'node-z' });
    expect(await c.registry.getTask('toy-saved')).toMatchObject({ nodeId: 'node-z', state: 'running', migrations: 1 });
    await toyFinished(toy.out);
    expect(stoppedAt).toBeLessThan(300);
    expect(tokenLines(toy.out)).toEqual(reference(toy.args).slice(0, 300));
    expect(readFileSync(toy.out, 'utf8').match(/^# prefill \d+/gm)).toEqual(['# prefill 1']);
  });

  it('forwards the whole image to a third node when the restore fails on the chosen target', async () => {
    c = await cluster();
    const outputs = join(c.dir, 'outputs');
    mkdirSync(outputs, { recursive: true });
    await c.startNode('node-a');
    // node-b lacks the file the task keeps open: its agent runs in a mount namespace where the output directory
    // is an empty tmpfs, so CRIU's restore there fails for real; node-c sees the file.
    await c.startNode('node-b', {
      lifecycle: 'on-demand',
      launch: (command, args) => ({ command: 'unshare', args: ['-m', 'sh', '-c', 'mount -t tmpfs none "$0" && exec "$@"', outputs, command, ...args] }),
    });
    await c.startNode('node-c');
    const toy = await c.runToy('node-a', { id: 'toy-fwd', stateMib: 32, tokens: 300, intervalMs: 20, outDir: outputs });
    await c.interrupt('node-a');
    const migration = await waitFor('the migration to finish', 40_000, async () => {
      const m = await migrationOf(c!.registry, 'toy-fwd');
      return m?.outcome ? m : undefined;
    });
    expect(migration, `${JSON.stringify(migration)}\n${c.nodes.get('node-b')!.log().split('\n').filter((l) => l.includes('"warn"')).join('\n')}\n${c.nodes.get('node-c')!.log().split('\n').filter((l) => l.includes('"warn"')).join('\n')}`).toMatchObject({
      outcome: 'migrated',
      targetNodeId: 'node-c',
      targetsTried: ['node-b', 'node-c'],
    });
    expect(migration.reason).toMatch(/^restored on node-c as pid \d+ \(after: restore on node-b failed: RESTORE_CONFLICT/);
    expect((await c.registry.getTask('toy-fwd'))?.nodeId).toBe('node-c');
    expect(c.nodes.get('node-b')!.log()).toMatch(/image forwarded to another target/);
    await expectUninterruptedRun(toy, 300);
  });

  it('lands the task on a third node when the chosen target dies during the transfer', async () => {
    c = await cluster();
    await c.startNode('node-a');
    const b = await c.startNode('node-b', { lifecycle: 'on-demand' }); // preferred target
    await c.startNode('node-c');
    const toy = await c.runToy('node-a', { id: 'toy-3', stateMib: 384, tokens: 400, intervalMs: 10 });
    await c.interrupt('node-a');
    await waitFor('the stream to node-b to start', 20_000, async () => {
      const m = await migrationOf(c!.registry, 'toy-3');
      return m && m.targetNodeId === 'node-b' && m.bytesSent > 0 ? true : undefined;
    });
    b.agent.kill('SIGKILL');
    const task = await waitFor('the task to run on node-c', 40_000, async () => {
      const t = await c!.registry.getTask('toy-3');
      return t?.nodeId === 'node-c' && t.state === 'running' ? t : undefined;
    }).catch(async (err: Error) => {
      const m = await migrationOf(c!.registry, 'toy-3');
      throw new Error(`${err.message}\n${JSON.stringify(m)}\n${c!.nodes.get('node-a')!.log().slice(-4000)}`);
    });
    const migration = await migrationReported(c, 'toy-3', 5000);
    expect(migration).toMatchObject({ outcome: 'migrated', targetNodeId: 'node-c' });
    expect(migration.targetsTried).toEqual(['node-b', 'node-c']);
    expect(task.migrations).toBe(1);
    await toyFinished(toy.out, 40_000);
    expect(tokenLines(toy.out)).toEqual(reference(toy.args).slice(0, 400));
    expect(readFileSync(toy.out, 'utf8').match(/^# prefill \d+/gm)).toEqual(['# prefill 1']);
  });
});
