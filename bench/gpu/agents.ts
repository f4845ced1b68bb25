/**
 * The GPU benchmark's agent path (bundled by bench/gpu/prepare.sh into .spotwatch/gpu-bundle/agents.mjs; run by
 * bench/gpu/run.sh with SPOTWATCH_GPU_BENCH_PATH=agents):
 *
 *   migrate — two real `spotwatch agent` processes (node-a, node-b: the CLI bundle, each with its own AWS
 *             metadata emulator and image directory, one Redis), the task started with `spotwatch run` on
 *             node-a, a spot interruption fired at node-a's emulator (`spotwatch simulate aws interrupt`, 120 s notice); spotwatch
 *             plans, checkpoints (CUDA hook + CRIU), streams the image to node-b and restores it there. Waits for
 *             the task to finish, compares its token stream with the reference run's and writes what the
 *             registry's migration record says (downtime, phases) plus the token-side timings.
 *   report  — merges that result into bench/results/gpu-<date>.json under "agentPath", keeping every other key
 *             (the direct path's results) as it is.
 *
 * The task is the decoder (bench/gpu/decoder.py) on a GPU machine, or any process that writes `index token …`
 * lines (examples/toy-llm/toy-llm.mjs for a CPU rehearsal of the same code path).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalCluster } from '../../src/dev/local-cluster.js';
import type { MigrationRecord, TaskRecord } from '../../src/registry/types.js';

import { need, parseArgs, sleep, type Args } from './cli-args.js';
import { readJson, type Json } from './json-file.js';
import { compareTokens, readTokens, type TokenLine } from './token-file.js';


async function logTail(path: string, n = 20): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

function runCli(node: string, cli: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(node, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => (stderr += String(e)));
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

async function migrate(a: Args): Promise<void> {
  const node = a.node ?? process.execPath;
  const cli = need(a, 'cli');
  const redisUrl = need(a, 'redis-url');
  const taskArgv = JSON.parse(need(a, 'task-args')) as string[];
  const tokensPath = need(a, 'tokens');
  const resultPath = need(a, 'result');
  const logPath = need(a, 'log');
  const migrateAt = Number(a['migrate-at'] ?? '48');
  const expectGpu = a['expect-gpu'] === 'true';
  const noticeSeconds = Number(a['notice-s'] ?? '120');
  const deadlineAll = Date.now() + Number(a['timeout-s'] ?? '360') * 1000;
  const taskId = a['task-id'] ?? 'decoder';
  const result: Record<string, unknown> = { config: a.label ?? 'unknown', migrateAt, path: 'agents', noticeSeconds };
  const ref = await readTokens(need(a, 'reference-tokens'));
  if (ref.length === 0) throw new Error(`no reference tokens in ${need(a, 'reference-tokens')}`);

  const cluster = new LocalCluster({
    redisUrl,
    cli: { command: node, args: [cli] },
    baseDir: need(a, 'base-dir'),
    env: { UV_USE_IO_URING: '0' },
    logLevel: a['log-level'] ?? 'info',
  });
  // The planner's rates before the cluster measured any: what the direct path measured on this machine class
  // (bench/results/gpu-*.json: streamed dump 1.38 GB/s, restore 1.46 GB/s, CUDA checkpoint 1.59 GB/s). With the
  // product's cautious defaults an 8 B task is (rightly) estimated not to fit a 120 s notice and gets its fallback.
  const agentArgs = ['--k8s', 'false', '--heartbeat-interval', a['heartbeat-ms'] ?? '1000', '--initial-rates', a['initial-rates'] ?? 'stream=1.3GB,restore=1.4GB,gpu=1.5GB'];
  const dumpAgentLogs = async () => {
    for (const [id, n] of cluster.nodes) await writeFile(join(need(a, 'agent-logs'), `agent-${id}.log`), n.log()).catch(() => {});
  };
  const finish = async (ok: boolean, error?: string) => {
    result.ok = ok;
    if (error) result.error = error;
    await dumpAgentLogs();
    await writeFile(resultPath, JSON.stringify(result, null, 2));
    console.log(JSON.stringify({ agents: result.config, ok, error, downtimeSeconds: result.downtimeSeconds, freezeToFirstTokenSeconds: result.freezeToFirstTokenSeconds, tokensMatch: result.tokensMatch }));
  };
  try {
    const t0 = Date.now();
    await cluster.startNode('node-a', { extraArgs: agentArgs });
    await cluster.startNode('node-b', { zone: 'us-east-1b', extraArgs: agentArgs });
    result.agentsStartSeconds = (Date.now() - t0) / 1000;

    // The task, the way a user starts one: `spotwatch run` on node-a.
    const launchTs = Date.now();
    const runArgs = a['run-args'] ? (JSON.parse(a['run-args']) as string[]) : []; // e.g. --prepare-url/--resume-url
    const run = await runCli(node, cli, ['run', '--id', taskId, '--node-id', 'node-a', '--fallback', 'none', '--log', logPath, ...runArgs, '--', ...taskArgv], {
      ...process.env,
      REDIS_URL: redisUrl,
      SPOTWATCH_QUEUE_PREFIX: cluster.prefix,
    });
    if (run.code !== 0) return await finish(false, `spotwatch run exited ${run.code}: ${run.stderr.trim()}`);
    result.run = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}');
    result.launchTs = launchTs;

    let before: TokenLine[] = [];
    while ((before = await readTokens(tokensPath)).length < migrateAt) {
      const t = await cluster.registry.getTask(taskId);
      if (t && t.state === 'exited') return await finish(false, `the task exited before ${migrateAt} tokens: ${await logTail(logPath)}`);
      if (Date.now() > deadlineAll) return await finish(false, `timed out waiting for ${migrateAt} tokens: ${await logTail(logPath)}`);
      await sleep(before.length > 0 ? 5 : 100);
    }
    if (before[0]?.ts !== undefined) result.coldStartToFirstTokenSeconds = (before[0].ts - launchTs) / 1000;
    // The agent measures the task (host memory, and GPU memory through nvidia-smi) on its heartbeat; the planner
    // sizes the migration from that record, so wait until it is there.
    let task: TaskRecord | undefined;
    const gpuWaitUntil = Date.now() + 30_000;
    while (!(task = await cluster.registry.getTask(taskId)) || (expectGpu && !(task.gpuMemBytes > 0 && task.gpuModel))) {
      if (task && Date.now() > gpuWaitUntil) {
        result.warning = `after 30 s the agent still reported no GPU memory for the task (gpuMemBytes ${task.gpuMemBytes}, gpuModel "${task.gpuModel}"); interrupting anyway`;
        break;
      }
      if (Date.now() > deadlineAll) return await finish(false, `the task is not in the registry`);
      await sleep(50);
    }
    result.taskBefore = { pid: task.pid, memBytes: task.memBytes, gpuMemBytes: task.gpuMemBytes, gpuModel: task.gpuModel };
    result.gpuStateGiB = task.gpuMemBytes / 2 ** 30;
    const nodeB = await cluster.registry.getNode('node-b');
    result.targetNode = nodeB ? { gpuModel: nodeB.gpuModel, gpuCount: nodeB.gpuCount, gpuFreeBytes: nodeB.gpuFreeBytes } : undefined;

    // The spot interruption, from node-a's metadata emulator.
    const tokensAtNotice = (await readTokens(tokensPath)).length;
    const fired = await runCli(node, cli, ['simulate', 'aws', 'interrupt', '--endpoint', cluster.nodes.get('node-a')!.emulator.url, '--time-left', String(noticeSeconds)], process.env);
    if (fired.code !== 0) return await finish(false, `spotwatch simulate aws interrupt exited ${fired.code}: ${fired.stderr.trim()}`);
    const noticeAt = Date.parse((JSON.parse(fired.stdout) as { interruption: { visibleAt: string } }).interruption.visibleAt);
    result.noticeVisibleAt = noticeAt;
    result.tokensAtNotice = tokensAtNotice;

    let m: MigrationRecord | undefined;
    for (;;) {
      const t = await cluster.registry.getTask(taskId);
      m = t?.lastMigrationId ? await cluster.registry.getMigration(t.lastMigrationId) : undefined;
      if (m?.outcome) break;
      if (Date.now() > deadlineAll) {
        result.migration = m;
        return await finish(false, `no migration outcome in time (phase ${m?.phase ?? '?'})`);
      }
      await sleep(100);
    }
    result.migration = m;
    const after = await cluster.registry.getTask(taskId);
    result.taskAfter = after ? { nodeId: after.nodeId, pid: after.pid, state: after.state, migrations: after.migrations } : undefined;
    if (m.outcome !== 'migrated' || after?.nodeId !== 'node-b') return await finish(false, `migration ${m.outcome}: ${m.reason ?? ''}`);

    const phases = m.phases;
    const sec = (k: string) => (phases[k] ?? 0) / 1000;
    result.downtimeSeconds = (m.downtimeMs ?? NaN) / 1000; // the registry's: CRIU freeze on node-a → restore returned on node-b
    result.noticeToPlanSeconds = (m.plannedAt - noticeAt) / 1000;
    // Each hook's own time where the engine names it (hook.<name>); the hooks' total otherwise.
    const hookSec = (named: string, total: string) => (phases[named] !== undefined ? sec(named) : sec(total));
    result.stagesSeconds = {
      prepare: sec('source.prepare'),
      taskPrepare: sec('source.hook.task-control'), // the task releasing its weights (task control), if it does
      cudaCheckpoint: hookSec('source.hook.cuda', 'source.hooks'),
      dump: sec('source.dump'), // pages stream to node-b while CRIU dumps them
      transfer: sec('source.connect') + sec('source.transfer') + sec('source.commit'),
      receive: sec('receive'),
      restore: sec('target.hooks') + sec('target.restore') + sec('target.verify'),
      cudaRestore: hookSec('target.hookAfter.cuda', 'target.hooksAfter'),
      taskResume: sec('target.hookAfter.task-control'), // the task reloading what it released
    };
    // Before the freeze, not downtime: the task staging (its KV cache's prefix) and the send of it to node-b.
    if (phases['source.stage'] !== undefined) {
      result.beforeFreezeSeconds = { stage: sec('source.stage'), stageSend: sec('source.stageSend') };
      result.stagedGiB = (m.stagedBytes ?? 0) / 2 ** 30;
    }

    // Wait for the restored task to finish its stream.
    let got: TokenLine[] = [];
    while ((got = await readTokens(tokensPath)).length < ref.length) {
      if (Date.now() > deadlineAll) break;
      await sleep(100);
    }
    const timings = a.timings;
    while (timings && !existsSync(timings) && Date.now() < deadlineAll) await sleep(100);
    got = await readTokens(tokensPath);
    if (timings && existsSync(timings)) result.decoderTimings = JSON.parse(await readFile(timings, 'utf8'));
    Object.assign(result, compareTokens(got, ref));
    // The task's side: from the start of the checkpoint (the record's frozenAt: the CUDA lock, the first pre-dump
    // hook) to the first token written after the stall, i.e. after the largest gap between consecutive tokens.
    if (got.every((t) => t.ts !== undefined) && m.frozenAt !== undefined) {
      const lockAt = m.frozenAt;
      const gaps = got.slice(1).map((t, i) => (t.ts as number) - (got[i]!.ts as number));
      const firstNew = got[gaps.indexOf(Math.max(...gaps)) + 1];
      if (firstNew) {
        result.tokensBeforeFreeze = firstNew.i;
        result.freezeToFirstTokenSeconds = ((firstNew.ts as number) - lockAt) / 1000;
        result.restoredToFirstTokenSeconds = ((firstNew.ts as number) - (m.restoredAt ?? NaN)) / 1000;
      }
      result.maxTokenGapSeconds = got.slice(1).reduce((mx, t, i) => Math.max(mx, ((t.ts as number) - ((got[i] as TokenLine).ts as number)) / 1000), 0);
    }
    const gb = (n: number) => n / 1e9;
    const st = result.stagesSeconds as Record<string, number>;
    // GPU bytes that went through the CUDA stages: what the task held, less what it released on prepare.
    const reloaded = ((result.decoderTimings as { resumes?: { reloadedBytes?: number }[] } | undefined)?.resumes ?? []).reduce((n, r) => n + (r.reloadedBytes ?? 0), 0);
    // The decoder says how much device memory was in use once it had released what it could (the agent's record may
    // be from an earlier heartbeat, e.g. during the prefill); otherwise what it held less what it reloaded.
    const usedAfterPrepare = (result.decoderTimings as { prepares?: { deviceUsedBytes?: number }[] } | undefined)?.prepares?.[0]?.deviceUsedBytes;
    const gpuMoved = usedAfterPrepare ?? Math.max(0, task.gpuMemBytes - reloaded);
    result.gpuMovedGiB = gpuMoved / 2 ** 30;
    result.stageGBps = {
      cudaCheckpoint: gb(gpuMoved) / st.cudaCheckpoint!,
      dump: gb(m.bytesSent) / st.dump!,
      restore: gb(m.bytesSent) / st.restore!,
      cudaRestore: gb(gpuMoved) / st.cudaRestore!,
      ...(reloaded > 0 && st.taskResume! > 0 ? { taskResume: gb(reloaded) / st.taskResume! } : {}),
    };
    result.imageGiB = m.bytesSent / 2 ** 30;
    // what the grouped stages leave out of the record's downtime (queueing, registry round trips, the receive)
    result.downtimeNotInStagesSeconds =
      (m.downtimeMs ?? NaN) / 1000 - (sec('source.criuFrozen') || sec('source.dump')) - sec('source.transfer') - sec('source.commit') - st.restore! - st.cudaRestore! - st.taskResume!;
    await finish(true);
  } catch (err) {
    await finish(false, `driver: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await dumpAgentLogs();
    await cluster.close().catch(() => {});
  }
}


/** Merges the agent-path result into gpu-<date>.json under "agentPath"; the file's other keys stay as they are. */
async function report(a: Args): Promise<void> {
  const r = (await readJson(need(a, 'result'))) ?? { ok: false, error: 'no result' };
  const info = (a.info ? await readJson(a.info) : undefined) ?? {};
  const ref = (a['ref-timings'] ? await readJson(a['ref-timings']) : undefined) ?? {};
  const date = a.date ?? new Date().toISOString().slice(0, 10);
  const dir = need(a, 'results-dir');
  const outPath = join(dir, `gpu-${date}.json`);
  await mkdir(dir, { recursive: true });
  const existing = (await readJson(outPath)) ?? { bench: 'gpu', date };
  const t = (r.decoderTimings as Json | undefined) ?? {};
  const m = (r.migration as MigrationRecord | undefined) ?? undefined;
  const reprefill = Number(t.prefill2_s ?? NaN);
  const coldStart = Number(r.coldStartToFirstTokenSeconds ?? NaN) - reprefill;
  const agentPath: Json = {
    what: 'Redis + two `spotwatch agent` processes (node-a, node-b; same machine, image dirs on /dev/shm), the task started with `spotwatch run` on node-a, a 120 s spot interruption fired at node-a\'s AWS metadata emulator; spotwatch planned, checkpointed (CUDA hook + CRIU), streamed and restored it on node-b',
    device: info.device,
    driver: info.driver,
    cuda: info.cuda,
    torch: info.torch,
    kernel: info.kernel,
    criu: info.criu,
    config: r.config,
    params: t.params ?? ref.params,
    contextTokens: t.ctx ?? ref.ctx,
    newTokens: t.new_tokens ?? ref.new_tokens,
    ok: r.ok,
    error: r.error,
    tokensMatch: r.tokensMatch ?? false,
    downtimeSeconds: r.downtimeSeconds,
    downtimeDefinition: 'the migration record\'s downtimeMs: the task stopped on the source (the CUDA lock, first pre-dump hook) to the restore call returning on the target (CUDA restore included)',
    freezeToFirstTokenSeconds: r.freezeToFirstTokenSeconds,
    freezeToFirstTokenDefinition: 'start of the checkpoint (CUDA lock) to the first token after the stall (the largest gap between tokens): the direct path\'s "downtime"',
    maxTokenGapSeconds: r.maxTokenGapSeconds,
    downtimeNotInStagesSeconds: r.downtimeNotInStagesSeconds,
    noticeToPlanSeconds: r.noticeToPlanSeconds,
    stagesSeconds: r.stagesSeconds,
    stageGBps: r.stageGBps,
    gpuStateGiB: r.gpuStateGiB,
    imageGiB: r.imageGiB,
    estimatedSeconds: m ? m.estimatedMs / 1000 : undefined,
    marginSeconds: m?.marginMs !== undefined ? m.marginMs / 1000 : undefined,
    coldStartToFirstTokenSeconds: r.coldStartToFirstTokenSeconds,
    // as the direct path defines them: (a) a fresh replica's start to first token (here from `spotwatch run`, page
    // cache dropped, compile cache warm) less the decoder's second, timed prefill; (b) that re-prefill alone
    coldStartSeconds: coldStart,
    reprefillSeconds: reprefill,
    speedupVsColdStart: coldStart / Number(r.freezeToFirstTokenSeconds ?? NaN),
    speedupVsReprefill: reprefill / Number(r.freezeToFirstTokenSeconds ?? NaN),
    cliBundleSource: a.source ? (await readFile(a.source, 'utf8').catch(() => '')).trim().split('\n') : undefined,
    warning: r.warning,
    migrationRecord: m,
    run: r,
  };
  existing.agentPath = agentPath;
  await writeFile(outPath, JSON.stringify(existing, null, 2) + '\n');
  const f = (x: unknown, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-');
  const s = (r.stagesSeconds as Record<string, number> | undefined) ?? {};
  console.log(`\nGPU benchmark, agent path — ${String(info.device ?? 'unknown device')}`);
  console.log('config  GPU GiB  cudaCkpt  dump    xfer    restore cudaRst  DOWNTIME(record)  freeze→1st token  notice→plan  match');
  console.log(
    [
      String(r.config).padEnd(7),
      f(r.gpuStateGiB).padEnd(8),
      f(s.cudaCheckpoint).padEnd(9),
      f(s.dump).padEnd(7),
      f(s.transfer).padEnd(7),
      f(s.restore).padEnd(7),
      f(s.cudaRestore).padEnd(8),
      f(r.downtimeSeconds).padEnd(17),
      f(r.freezeToFirstTokenSeconds).padEnd(17),
      f(r.noticeToPlanSeconds, 3).padEnd(12),
      r.ok ? String(r.tokensMatch) : `FAILED: ${String(r.error).slice(0, 300)}`,
    ].join(' '),
  );
  console.log(`wrote agentPath into ${outPath}`);
  console.log(JSON.stringify({ bench: 'gpu', path: 'agents', ok: r.ok, tokensMatch: agentPath.tokensMatch, downtimeSeconds: r.downtimeSeconds, freezeToFirstTokenSeconds: r.freezeToFirstTokenSeconds, stagesSeconds: s }));
  if (!r.ok || r.tokensMatch !== true) process.exitCode = 1;
}

const [cmd, ...rest] = process.argv.slice(2);
const args = parseArgs(rest);
const main = cmd === 'migrate' ? migrate : cmd === 'report' ? report : undefined;
if (!main) {
  console.error('usage: agents.mjs migrate|report --…');
  process.exit(2);
}
main(args)
  .then(() => process.exit(process.exitCode ?? 0))
  .catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
