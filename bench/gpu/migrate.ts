/**
 * The GPU benchmark's driver (bundled by bench/gpu/prepare.sh into one file that runs with a bare `node`):
 *
 *   migrate  — starts the decoder (bench/gpu/decoder.py) as a task of its own session, waits for it to decode
 *              some tokens, then moves it the way spotwatch does, stage by stage and timed:
 *              CUDA lock+checkpoint (CudaCheckpointHook) → criu dump (tmpfs) → transfer (loopback TCP stream into
 *              the "target" image directory) → criu restore → CUDA restore+unlock (the hook's afterRestore) →
 *              the first new token. Then it waits for the decoder to finish and compares its token stream with
 *              the reference run's, bit for bit (token ids and logits).
 *   report   — folds the per-configuration results, the bandwidth floor and the machine facts into
 *              bench/results/gpu-<date>.json and prints one table.
 *
 * This is the direct path (hook + CRIU command lines of src/engines/criu). The agent path (Redis, two agents,
 * `spotwatch run`, an AWS interruption from the emulator) is bench/gpu/agents.ts; see SPOTWATCH_GPU_BENCH_PATH in
 * run.sh.
 */
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { buildDumpArgs, buildPageServerArgs, buildRestoreArgs, type CriuTaskOptions } from '../../src/engines/criu/criu-command.js';
import { needsShellJob, processTree, readProcStat, taskState } from '../../src/engines/criu/proc.js';
import type { EngineResult, ReceivedImage } from '../../src/engines/checkpoint-engine.js';
import { CriuEngine } from '../../src/engines/criu/criu-engine.js';
import { listenForImageStreams, tcpImageSink } from '../../src/engines/criu/transport.js';
import { CudaCheckpointHook, CudaHookError } from '../../src/engines/cuda/cuda-hook.js';
import { HelperBackend, NvidiaToolBackend, type CudaBackend } from '../../src/engines/cuda/cuda-backend.js';
import { gpuMemoryByPid } from '../../src/engines/cuda/gpu-detect.js';

import { need, parseArgs, sleep, type Args } from './cli-args.js';
import { readJson, type Json } from './json-file.js';
import { compareTokens, readTokens, type TokenLine } from './token-file.js';


async function dirBytes(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  for (const f of await readdir(dir)) {
    const s = await stat(join(dir, f));
    if (s.isFile()) {
      bytes += s.size;
      files++;
    }
  }
  return { bytes, files };
}

function runCmd(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((res) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => (out += String(e)));
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, out, ms: performance.now() - t0 });
    });
  });
}

async function logTail(path: string, n = 15): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

async function vmRss(pid: number): Promise<number> {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Streams every file of `src` into `dst` over loopback TCP (one connection per file, sequentially), the way an
 * image travels between agents; returns bytes and wall time.
 */
export async function transferDir(src: string, dst: string): Promise<{ bytes: number; ms: number }> {
  await mkdir(dst, { recursive: true });
  const received: Promise<number>[] = [];
  const server = createServer((sock: Socket) => {
    received.push(
      new Promise<number>((res, rej) => {
        let buf = Buffer.alloc(0);
        const onData = (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (buf.length < 4) return;
          const n = buf.readUInt32BE(0);
          if (buf.length < 4 + n) return;
          sock.off('data', onData);
          sock.pause();
          const h = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as { name: string; size: number };
          const ws = createWriteStream(join(dst, basename(h.name)), { highWaterMark: 8 << 20 });
          const rest = buf.subarray(4 + n);
          if (rest.length) ws.write(rest);
          pipeline(sock, ws).then(() => res(h.size), rej);
        };
        sock.on('data', onData);
        sock.on('error', rej);
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const t0 = performance.now();
  let bytes = 0;
  try {
    for (const name of await readdir(src)) {
      const s = await stat(join(src, name));
      if (!s.isFile()) continue;
      const sock = connect(port, '127.0.0.1');
      await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
      const header = Buffer.from(JSON.stringify({ name, size: s.size }), 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(header.length);
      sock.write(Buffer.concat([len, header]));
      await pipeline(createReadStream(join(src, name), { highWaterMark: 8 << 20 }), sock);
      const got = await (received[received.length - 1] as Promise<number>);
      const d = await stat(join(dst, name));
      if (d.size !== s.size || got !== s.size) throw new Error(`transfer of ${name}: ${d.size} of ${s.size} bytes arrived`);
      bytes += s.size;
    }
  } finally {
    server.close();
  }
  return { bytes, ms: performance.now() - t0 };
}

async function migrate(a: Args): Promise<void> {
  const python = a.python ?? 'python3';
  const decoderArgs = JSON.parse(need(a, 'decoder-args')) as string[];
  const tokensPath = need(a, 'tokens');
  const timingsPath = need(a, 'timings');
  const work = need(a, 'work');
  const criu = need(a, 'criu');
  const migrateAt = Number(a['migrate-at'] ?? '64');
  const timeoutMs = Number(a['timeout-s'] ?? '480') * 1000;
  const resultPath = need(a, 'result');
  const deadlineAll = Date.now() + timeoutMs;
  const backend: CudaBackend = a['nvidia-tool'] ? new NvidiaToolBackend(a['nvidia-tool']) : new HelperBackend(need(a, 'helper'));
  const src = join(work, 'source-images');
  const dst = join(work, 'target-images');
  await rm(work, { recursive: true, force: true });
  await mkdir(src, { recursive: true });
  await mkdir(dst, { recursive: true });
  await rm(tokensPath, { force: true });
  await rm(timingsPath, { force: true });

  const result: Record<string, unknown> = { config: a.label ?? 'unknown', migrateAt, backend: `${backend.kind} ${backend.path}` };
  const finish = async (ok: boolean, error?: string) => {
    result.ok = ok;
    if (error) result.error = error;
    await writeFile(resultPath, JSON.stringify(result, null, 2));
    console.log(JSON.stringify({ migrate: result.config, ok, error, downtimeSeconds: result.downtimeSeconds, tokensMatch: result.tokensMatch }));
  };

  // 1. The task: its own session, stdio to a file (CRIU cannot carry a pipe to a process outside the tree).
  const logFd = openSync(need(a, 'log'), 'w');
  const launchTs = Date.now();
  const child = spawn(python, decoderArgs, { detached: true, stdio: ['ignore', logFd, logFd], env: process.env });
  closeSync(logFd);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  const pid = child.pid as number;
  result.launchTs = launchTs;

  let before: TokenLine[] = [];
  while ((before = await readTokens(tokensPath)).length < migrateAt) {
    if (exited !== undefined) return finish(false, `decoder exited (${exited}) before ${migrateAt} tokens: ${await logTail(need(a, 'log'))}`);
    if (Date.now() > deadlineAll) return finish(false, 'timed out waiting for the decoder to decode');
    await sleep(before.length > 0 ? 2 : 50);
  }
  result.firstTokenTs = before[0]?.ts;
  result.coldStartToFirstTokenSeconds = ((before[0]?.ts ?? launchTs) - launchTs) / 1000;

  // 2. Sizes before the move.
  const pids = await processTree(pid);
  const gpuByPid = await gpuMemoryByPid();
  const gpuBytes = pids.reduce((s, p) => s + (gpuByPid?.get(p) ?? 0), 0);
  result.processes = pids.length;
  result.gpuBytes = gpuBytes;
  result.gpuStateGiB = gpuBytes / 2 ** 30;
  result.hostRssBeforeBytes = await vmRss(pid);
  const root = await readProcStat(pid);
  const taskOpts: CriuTaskOptions = {
    shellJob: root ? needsShellJob(root, pids) : false,
    tcpEstablished: false,
    extUnixSk: true,
    fileLocks: true,
    manageCgroups: 'ignore',
    networkLock: 'skip',
  };

  const hook = new CudaCheckpointHook({ backend, lockTimeoutMs: 20_000, gpuMemory: async () => gpuByPid });
  const migrationId = `gpu-bench-${result.config}-${launchTs}`;
  const via = a.via ?? 'engine';
  result.via = via;
  const tFreeze = Date.now();
  result.freezeTs = tFreeze;
  const moved =
    via === 'engine'
      ? await moveWithEngine({ pid, criu, hook, migrationId, src, dst, deadline: deadlineAll, result })
      : await moveWithCommands({ pid, pids, criu, hook, migrationId, src, dst, deadline: deadlineAll, result, taskOpts, pageServer: via === 'pageserver' });
  if (!moved.ok) return finish(false, moved.error);
  const tCudaRestore = Date.now();
  const phases = moved.phases;

  // The first new token: the first one stamped after the CUDA lock+checkpoint completed (the task was frozen
  // from then on; tokens written between the call's start and the lock still belong to the source).
  // Without a GPU (CPU-only dry runs) the freeze is CRIU's own.
  const tLocked = gpuBytes === 0 && typeof result.frozenAtCriu === 'number' ? result.frozenAtCriu : tFreeze + (phases.cudaCheckpoint ?? 0) * 1000;
  let firstNew: TokenLine | undefined;
  while (!(firstNew = (await readTokens(tokensPath)).find((t) => (t.ts ?? 0) > tLocked))) {
    if (Date.now() > deadlineAll) return finish(false, 'no token after the restore');
    await sleep(1);
  }
  const tFirst = firstNew.ts ?? NaN;
  result.tokensBeforeFreeze = firstNew.i;
  phases.firstToken = Math.max(0, tFirst - tCudaRestore) / 1000;
  result.phasesSeconds = phases;
  result.hookTimingsMs = { ...hook.timings(migrationId) };
  result.downtimeSeconds = (tFirst - tFreeze) / 1000;
  const gb = (n: number) => n / 1e9;
  const imgBytes = Number(result.imageBytes ?? 0);
  result.stageGBps = {
    cudaCheckpoint: gb(gpuBytes) / (phases.cudaCheckpoint ?? NaN),
    dump: gb(imgBytes) / (phases.dump ?? NaN),
    transfer: gb(Number(result.transferBytes ?? imgBytes)) / (phases.transfer ?? NaN),
    restore: gb(imgBytes) / (phases.restore ?? NaN),
    cudaRestore: gb(gpuBytes) / (phases.cudaRestore ?? NaN),
  };

  // 9. Let it finish, then compare with the reference stream.
  while (true) {
    try {
      await stat(timingsPath);
      break;
    } catch {
      // not yet
    }
    if (Date.now() > deadlineAll) return finish(false, 'the restored decoder did not finish in time');
    await sleep(100);
  }
  const timings = JSON.parse(await readFile(timingsPath, 'utf8')) as Record<string, number>;
  result.decoderTimings = timings;
  const got = await readTokens(tokensPath);
  const ref = await readTokens(need(a, 'reference-tokens'));
  Object.assign(result, compareTokens(got, ref));
  result.maxTokenGapSeconds = got.slice(1).reduce((m, t, i) => Math.max(m, ((t.ts ?? NaN) - ((got[i] as TokenLine).ts ?? NaN)) / 1000), 0);
  await finish(true);
}

interface MoveArgs {
  pid: number;
  criu: string;
  hook: CudaCheckpointHook;
  migrationId: string;
  src: string;
  dst: string;
  deadline: number;
  result: Record<string, unknown>;
}
type Moved = { ok: true; phases: Record<string, number> } | { ok: false; error: string };

/**
 * Through spotwatch's CRIU engine with the CUDA hook: checkpoint streamed (CRIU page server relayed over an
 * image-stream TCP connection) into the target's receive(), then restore(): the production path minus the agents.
 */
async function moveWithEngine(m: MoveArgs): Promise<Moved> {
  const engine = new CriuEngine({ criuPath: m.criu, hooks: [m.hook], logLevel: Number(process.env.SPOTWATCH_GPU_CRIU_LOG_LEVEL ?? '2') });
  let received: Promise<EngineResult<ReceivedImage>> | undefined;
  const listener = await listenForImageStreams({
    onConnection: (conn) => {
      received = engine.receive({ connection: conn, directory: m.dst, migrationId: m.migrationId, deadline: m.deadline });
    },
  });
  try {
    const task = { kind: 'process' as const, pid: m.pid, id: 'decoder' };
    const ck = await engine.checkpoint({
      task,
      migrationId: m.migrationId,
      destination: { kind: 'stream', sink: tcpImageSink({ host: listener.host, port: listener.port }), localDir: m.src },
      deadline: m.deadline,
    });
    if (ck.status !== 'ok') {
      const cause = ck.cause instanceof CudaHookError ? { code: ck.cause.engineCode, step: ck.cause.step, states: ck.cause.cudaStates, calls: ck.cause.calls } : undefined;
      m.result.hook = cause;
      m.result.dumpLog = ck.logPath ? await logTail(ck.logPath, 30) : undefined;
      return { ok: false, error: `engine checkpoint ${ck.code}: ${ck.message} (task ${ck.taskState ?? '?'})` };
    }
    const rec = received ? await received : undefined;
    if (!rec || rec.status !== 'ok') return { ok: false, error: `engine receive: ${rec ? `${rec.code}: ${rec.message}` : 'no connection'}` };
    m.result.imageBytes = ck.value.imageBytes;
    m.result.transferBytes = rec.value.imageBytes;
    m.result.imageFiles = rec.value.files;
    m.result.checkpointPhasesMs = ck.value.phases;
    m.result.frozenAtCriu = ck.value.frozenAt;
    const rs = await engine.restore({ migrationId: m.migrationId, source: { kind: 'directory', path: m.dst }, deadline: m.deadline });
    if (rs.status !== 'ok') {
      m.result.restoreLog = rs.logPath ? await logTail(rs.logPath, 30) : undefined;
      return { ok: false, error: `engine restore ${rs.code}: ${rs.message}` };
    }
    m.result.restorePhasesMs = rs.value.phases;
    if (rs.value.task.kind === 'process') m.result.restoredPid = rs.value.task.pid;
    const c = ck.value.phases;
    const r = rs.value.phases;
    const s = (...xs: (number | undefined)[]) => xs.reduce<number>((t, x) => t + (x ?? 0), 0) / 1000;
    return {
      ok: true,
      phases: {
        cudaCheckpoint: s(c.hooks),
        dump: s(c.dump), // pages stream to the target while CRIU dumps them (page server): dump and page transfer overlap
        transfer: s(c.connect, c.transfer, c.commit),
        restore: s(r.hooks, r.restore, r.verify),
        cudaRestore: s(r.hooksAfter),
      },
    };
  } finally {
    await listener.close();
  }
}

/**
 * Stage by stage with CRIU command lines: dump into tmpfs, copy over loopback TCP, restore. With `pageServer`, the
 * dump sends its pages straight to a `criu page-server` on the target over TCP (no relay through node), and only
 * the small metadata images are copied afterwards.
 */
async function moveWithCommands(m: MoveArgs & { pids: number[]; taskOpts: CriuTaskOptions; pageServer?: boolean }): Promise<Moved> {
  const { pid, pids, criu, hook, migrationId, src, dst, result } = m;
  const ac = new AbortController();
  const ctx = { task: { kind: 'process' as const, pid, id: 'decoder' }, migrationId, deadline: m.deadline, signal: ac.signal, pids };
  const t0 = Date.now();
  try {
    await hook.beforeCheckpoint(ctx);
  } catch (err) {
    result.hook = err instanceof CudaHookError ? { code: err.engineCode, step: err.step, states: err.cudaStates, calls: err.calls } : String(err);
    return { ok: false, error: `cuda checkpoint: ${(err as Error).message}` };
  }
  const tCk = Date.now();
  result.hostRssCheckpointedBytes = await vmRss(pid);

  let psPid = 0;
  let psAddress: { address: string; port: number } | undefined;
  if (m.pageServer) {
    psAddress = { address: '127.0.0.1', port: 20000 + Math.floor(Math.random() * 20000) };
    const psPidFile = join(dst, 'page-server.pid');
    // --daemon: criu returns once the page server listens, so the dump cannot race it.
    const ps = await runCmd(criu, [...buildPageServerArgs({ imagesDir: dst, logFile: 'page-server.log', logLevel: 2, on: psAddress }), '--daemon', '--pidfile', psPidFile], 20_000);
    if (ps.code !== 0) return { ok: false, error: `criu page-server failed (${ps.code}): ${ps.out.trim().slice(-300)}` };
    psPid = Number((await readFile(psPidFile, 'utf8')).trim());
  }
  const dumpArgs = buildDumpArgs({ pid, imagesDir: src, logFile: 'dump.log', logLevel: 2, linkRemap: true, after: 'kill', ...m.taskOpts, ...(psAddress ? { pageServer: psAddress } : {}) });
  const dump = await runCmd(criu, dumpArgs, Math.max(10_000, m.deadline - Date.now()));
  result.dumpCommandMs = dump.ms;
  if (psPid) {
    // the page server exits once the dump closes its connection
    for (let i = 0; i < 2000 && (await taskState(psPid)) === 'running'; i++) await sleep(5);
  }
  const tDump = Date.now();
  if (dump.code !== 0) {
    const ts = await taskState(pid);
    try {
      await hook.afterCheckpoint({ ...ctx, ok: false, taskState: ts });
    } catch (err) {
      result.rollbackError = (err as Error).message;
    }
    result.dumpLog = await logTail(join(src, 'dump.log'), 30);
    return { ok: false, error: `criu dump failed (${dump.code}): ${dump.out.trim().slice(-500)}; task ${await taskState(pid)} on the source` };
  }
  await hook.afterCheckpoint({ ...ctx, ok: true, taskState: 'gone' });
  const img = await dirBytes(src);
  const pagesAtTarget = psPid ? (await dirBytes(dst)).bytes : 0;
  result.imageBytes = img.bytes + pagesAtTarget;
  result.imageFiles = img.files;

  const xfer = await transferDir(src, dst);
  xfer.bytes += pagesAtTarget;
  const tXfer = Date.now();
  result.transferBytes = xfer.bytes;
  await rm(src, { recursive: true, force: true });

  const pidFile = join(dst, 'restored.pid');
  const restore = await runCmd(criu, buildRestoreArgs({ imagesDir: dst, logFile: 'restore.log', logLevel: 2, pidFile, ...m.taskOpts }), Math.max(10_000, m.deadline - Date.now()));
  const tRestore = Date.now();
  if (restore.code !== 0) {
    result.restoreLog = await logTail(join(dst, 'restore.log'), 30);
    return { ok: false, error: `criu restore failed (${restore.code}): ${restore.out.trim().slice(-500)}` };
  }
  const newPid = Number((await readFile(pidFile, 'utf8')).trim());
  result.restoredPid = newPid;
  try {
    await hook.afterRestore({ ...ctx, task: { kind: 'process', pid: newPid, id: 'decoder' }, pids: await processTree(newPid) });
  } catch (err) {
    result.hook = err instanceof CudaHookError ? { code: err.engineCode, step: err.step, states: err.cudaStates } : String(err);
    return { ok: false, error: `cuda restore: ${(err as Error).message}` };
  }
  const tCudaRestore = Date.now();
  return {
    ok: true,
    phases: {
      cudaCheckpoint: (tCk - t0) / 1000,
      dump: (tDump - tCk) / 1000,
      transfer: (tXfer - tDump) / 1000,
      restore: (tRestore - tXfer) / 1000,
      cudaRestore: (tCudaRestore - tRestore) / 1000,
    },
  };
}


async function report(a: Args): Promise<void> {
  const configs = need(a, 'configs').split(',').filter(Boolean);
  const dir = need(a, 'dir');
  const info = (await readJson(join(dir, 'info.json'))) ?? {};
  const bw = (await readJson(join(dir, 'bandwidth.json'))) ?? {};
  const h2d = Number(bw.pinned_h2d_GBps ?? 0);
  const d2h = Number(bw.pinned_d2h_GBps ?? 0);
  const rows: Json[] = [];
  for (const entry of configs) {
    // entries are CONFIG.VIA (one migrated run per path) and share CONFIG's reference run
    const [c, via] = entry.split('.') as [string, string | undefined];
    const m = (await readJson(join(dir, `${entry}.migrate.json`))) ?? { ok: false, error: 'no result' };
    const ref = (await readJson(join(dir, `${c}.ref.timings.json`))) ?? {};
    const refLaunch = (await readJson(join(dir, `${c}.ref.launch.json`))) ?? {};
    const t = (m.decoderTimings as Json | undefined) ?? {};
    const gpuBytes = Number(m.gpuBytes ?? 0);
    // (a) a fresh replica: process start to first token, weights from disk with the page cache dropped,
    // compile + capture + warm-up, and the first prefill of the context (the migrated run's own start, whose
    // compile cache is warm: the conservative figure) — and the same for the very first launch (cold cache).
    const coldStart = Number(m.coldStartToFirstTokenSeconds ?? NaN) - Number(t.prefill2_s ?? 0);
    const coldStartFirstLaunch = Number(refLaunch.firstTokenTs ?? NaN) / 1000 - Number(refLaunch.launchTs ?? NaN) / 1000 - Number(ref.prefill2_s ?? 0);
    const reprefill = Number(t.prefill2_s ?? NaN);
    const downtime = Number(m.downtimeSeconds ?? NaN);
    const floor = h2d > 0 && d2h > 0 ? gpuBytes / 1e9 / d2h + gpuBytes / 1e9 / h2d : NaN;
    rows.push({
      config: c,
      via: via ?? m.via,
      params: t.params ?? ref.params,
      contextTokens: t.ctx ?? ref.ctx,
      newTokens: t.new_tokens ?? ref.new_tokens,
      ok: m.ok,
      error: m.error,
      tokensMatch: m.tokensMatch ?? false,
      downtimeSeconds: downtime,
      coldStartSeconds: coldStart,
      coldStartFirstLaunchSeconds: coldStartFirstLaunch,
      reprefillSeconds: reprefill,
      speedupVsColdStart: coldStart / downtime,
      speedupVsReprefill: reprefill / downtime,
      gpuStateGiB: gpuBytes / 2 ** 30,
      imageGiB: Number(m.imageBytes ?? 0) / 2 ** 30,
      floorSeconds: floor,
      downtimeOverFloor: downtime / floor,
      phasesSeconds: m.phasesSeconds,
      stageGBps: m.stageGBps,
      coldStartBreakdown: { import: t.import_s, load: t.load_s, compile: t.compile_s, capture: t.capture_s, prefill: t.prefill1_s },
      weightsGiB: Number(t.weights_bytes ?? 0) / 2 ** 30,
      kvCacheGiB: Number(t.kv_cache_bytes ?? 0) / 2 ** 30,
      maxTokenGapSeconds: m.maxTokenGapSeconds,
      migrate: m,
    });
  }
  // The headline: the largest configuration, through the engine path when it ran.
  const largest =
    rows.filter((r) => r.ok).sort((x, y) => Number(y.params ?? 0) - Number(x.params ?? 0) || Number(y.via === 'engine') - Number(x.via === 'engine'))[0] ?? rows[0] ?? {};
  const date = new Date().toISOString().slice(0, 10);
  const out: Json = {
    bench: 'gpu',
    date,
    path: a.path ?? 'direct',
    device: info.device ?? 'unknown',
    driver: info.driver,
    cuda: info.cuda,
    torch: info.torch,
    kernel: info.kernel,
    criu: info.criu,
    tokensMatch: rows.length > 0 && rows.every((r) => r.tokensMatch === true),
    speedupVsColdStart: largest.speedupVsColdStart,
    speedupVsReprefill: largest.speedupVsReprefill,
    downtimeSeconds: largest.downtimeSeconds,
    gpuStateGiB: largest.gpuStateGiB,
    largestConfig: largest.config,
    largestVia: largest.via,
    stageGBps: { ...((largest.stageGBps as Json | undefined) ?? {}), floorPinnedD2H: d2h, floorPinnedH2D: h2d, pageableD2H: bw.pageable_d2h_GBps, pageableH2D: bw.pageable_h2d_GBps },
    floorSeconds: largest.floorSeconds,
    bandwidth: bw,
    configs: rows,
  };
  const outPath = join(need(a, 'results-dir'), `gpu-${date}.json`);
  await mkdir(need(a, 'results-dir'), { recursive: true });
  await writeFile(outPath, JSON.stringify(out, null, 2) + '\n');

  const f = (x: unknown, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-');
  console.log(`\nGPU migration benchmark — ${String(out.device)} (driver ${String(out.driver)}), path ${String(out.path)}`);
  console.log('config via      params  ctx    GPU GiB  cudaCkpt  dump    xfer    restore cudaRst 1stTok  DOWNTIME  cold(a)  reprefill(b)  a/down  b/down  floor   match');
  for (const r of rows) {
    const p = (r.phasesSeconds as Record<string, number> | undefined) ?? {};
    console.log(
      [
        String(r.config).padEnd(7),
        String(r.via ?? '-').padEnd(8),
        `${f(Number(r.params ?? 0) / 1e9, 2)}B`.padEnd(7),
        String(r.contextTokens ?? '-').padEnd(6),
        f(r.gpuStateGiB).padEnd(8),
        f(p.cudaCheckpoint).padEnd(9),
        f(p.dump).padEnd(7),
        f(p.transfer).padEnd(7),
        f(p.restore).padEnd(7),
        f(p.cudaRestore).padEnd(7),
        f(p.firstToken, 3).padEnd(7),
        f(r.downtimeSeconds).padEnd(9),
        f(r.coldStartSeconds).padEnd(8),
        f(r.reprefillSeconds).padEnd(13),
        f(r.speedupVsColdStart).padEnd(7),
        f(r.speedupVsReprefill, 3).padEnd(7),
        f(r.floorSeconds).padEnd(7),
        r.ok ? String(r.tokensMatch) : `FAILED: ${String(r.error).slice(0, 200)}`,
      ].join(' '),
    );
  }
  console.log(`stage GB/s (largest): ${JSON.stringify(out.stageGBps, (_k, v) => (typeof v === 'number' ? Number(v.toFixed(2)) : v))}`);
  console.log(`wrote ${outPath}`);
  console.log(JSON.stringify({ bench: 'gpu', tokensMatch: out.tokensMatch, speedupVsColdStart: out.speedupVsColdStart, speedupVsReprefill: out.speedupVsReprefill, downtimeSeconds: out.downtimeSeconds, gpuStateGiB: out.gpuStateGiB, device: out.device }));
}

/** Runs the reference decoder as a child, recording its launch time (for the first-launch cold start). */
async function reference(a: Args): Promise<void> {
  const decoderArgs = JSON.parse(need(a, 'decoder-args')) as string[];
  const logFd = openSync(need(a, 'log'), 'w');
  const launchTs = Date.now();
  const child = spawn(a.python ?? 'python3', decoderArgs, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  const toks = await readTokens(need(a, 'tokens'));
  await writeFile(need(a, 'result'), JSON.stringify({ launchTs, firstTokenTs: toks[0]?.ts, exit: code, tokens: toks.length }));
  console.log(JSON.stringify({ reference: a.label, exit: code, tokens: toks.length, firstTokenSeconds: ((toks[0]?.ts ?? NaN) - launchTs) / 1000 }));
  if (code !== 0) {
    console.log(await logTail(need(a, 'log'), 40));
    process.exitCode = 1;
  }
}

const [cmd, ...rest] = process.argv.slice(2);
const args = parseArgs(rest);
const main = cmd === 'migrate' ? migrate : cmd === 'report' ? report : cmd === 'reference' ? reference : undefined;
if (!main) {
  console.error('usage: migrate.mjs migrate|reference|report --…');
  process.exit(2);
}
main(args).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
