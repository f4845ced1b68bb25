/**
 * The CRIU engine against real CRIU and a real process: the toy LLM (examples/toy-llm) is started in its own
 * session, checkpointed, restored, and its token stream must equal an uninterrupted run's — no gap, no repeat,
 * prefill once. No mocks. CRIU needs root; get it with `scripts/install-criu.sh`. Without CRIU these tests
 * are skipped locally but FAIL under CI (`CI` set).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointRequest, EngineFailure, EngineHook, EngineResult, ReceivedImage, RestoreResult } from '../../src/engines/checkpoint-engine.js';
import { CriuEngine } from '../../src/engines/criu/criu-engine.js';
import { locateCriu } from '../../src/engines/criu/criu-binary.js';
import { firstChild, taskState } from '../../src/engines/criu/proc.js';
import { listenForImageStreams, tcpImageSink } from '../../src/engines/criu/transport.js';
import { TaskControlHook } from '../../src/engines/task-control-hook.js';
import { freePort } from '../../src/util/free-port.js';
import { expectRepeatsButNoGap } from '../support/token-stream.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TOY = join(ROOT, 'examples/toy-llm/toy-llm.mjs');

const location = await locateCriu();
const isRoot = process.getuid?.() === 0;
const ready = location.ok && isRoot;
const whyNot = !location.ok ? location.reason : 'CRIU needs root and these tests do not run as root';
if (!ready && !process.env.CI) {
  console.warn(`criu-engine integration tests SKIPPED: ${whyNot} (they fail under CI)`);
}

interface Toy {
  pid: number;
  out: string;
  args: string[];
  /** The work dir the toy writes into (its tokens, its stderr, and any images the test makes). */
  dir: string;
  /** The uninterrupted run's tokens, computed from the start (await it only where the test needs it). */
  reference: Promise<string[]>;
}

interface ToyOptions {
  stateMib: number;
  tokens: number;
  intervalMs: number;
  /** Resolve once the toy has decoded this many tokens. */
  decoded: number;
  /** More toy arguments (e.g. --weights-mib, --control-port). */
  extraArgs?: string[];
  /**
   * Run the toy as pid 1 of a pid namespace of its own (`unshare --pid --fork setsid …`), as a container's process
   * would be: a restore makes a new namespace, so it can run here while the source still holds the toy's pids.
   */
  pidNamespace?: boolean;
}

/** Toys, restored pids and other processes this test started; each is killed after the test if still running. */
const started: { pid: number; marker: string }[] = [];
/** Listeners and other things to close after the test. */
const cleanups: (() => Promise<void> | void)[] = [];
const workDirs: string[] = [];

function workDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'spotwatch-criu-test-'));
  workDirs.push(d);
  return d;
}

/** Kills `pid` only while its command line still holds `marker` (it may be gone, a zombie, or a reused pid). */
function killIfStill(pid: number, marker: string): void {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

function toyArgs(stateMib: number, tokens: number, intervalMs: number): string[] {
  return ['--prompt-tokens', '64', '--state-mib', String(stateMib), '--tokens', String(tokens), '--interval-ms', String(intervalMs), '--seed', '7'];
}

/**
 * Starts the toy LLM in a fresh work dir, in its own session (detached: setsid), stdio on files, as CRIU needs,
 * and waits until it has decoded `decoded` tokens. Killed after the test.
 */
async function decodingToy({ stateMib, tokens, intervalMs, decoded, extraArgs = [], pidNamespace = false }: ToyOptions): Promise<Toy> {
  const dir = workDir();
  const out = join(dir, 'tokens.txt');
  const err = openSync(join(dir, 'toy.err'), 'a');
  const args = [...toyArgs(stateMib, tokens, intervalMs), ...extraArgs];
  const command = [process.execPath, TOY, ...args, '--out', out];
  const child = spawn(pidNamespace ? 'unshare' : command[0]!, pidNamespace ? ['--pid', '--fork', 'setsid', ...command] : command.slice(1), {
    detached: true,
    stdio: ['ignore', 'ignore', err],
    env: { ...process.env, UV_USE_IO_URING: '0' },
  });
  closeSync(err);
  child.unref();
  if (!child.pid) throw new Error('toy did not start');
  started.push({ pid: child.pid, marker: pidNamespace ? 'unshare' : 'toy-llm' });
  let pid = child.pid;
  if (pidNamespace) {
    // The toy is unshare's only child (pid 1 inside).
    pid = await firstChild(child.pid, 5000);
    if (!pid) throw new Error('the toy did not start in its pid namespace');
    started.push({ pid, marker: 'toy-llm' });
  }
  const ref = reference(args);
  ref.catch(() => {}); // a test that never awaits it must not see an unhandled rejection
  await waitFor(() => readOut(out).tokens.length >= decoded, 15_000, `the toy to decode ${decoded} tokens`);
  return { pid, out, args, dir, reference: ref };
}

function readOut(out: string): { tokens: string[]; prefills: number; done: boolean } {
  const lines = existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter(Boolean) : [];
  return {
    tokens: lines.filter((l) => !l.startsWith('#')),
    prefills: lines.filter((l) => l.startsWith('# prefill')).length,
    done: lines.some((l) => l.startsWith('# done')),
  };
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function reference(args: string[]): Promise<string[]> {
  return new Promise((res, rej) => {
    execFile(process.execPath, [TOY, '--reference', ...args], { maxBuffer: 1 << 24 }, (err, stdout) => {
      if (err) rej(err);
      else res(stdout.split('\n').filter(Boolean));
    });
  });
}

function expectOk<T>(r: EngineResult<T>): T {
  if (r.status !== 'ok') throw new Error(`expected ok, got ${r.status} ${r.code}: ${r.message}`);
  return r.value;
}

/** Asserts a failure with these fields (any left out are not checked) and returns it, for further checks. */
function expectFailure<T>(r: EngineResult<T>, want: Partial<Pick<EngineFailure, 'status' | 'code' | 'taskState'>>): EngineFailure {
  expect(r.status).not.toBe('ok');
  expect(r).toMatchObject(want);
  if (r.status === 'ok') throw new Error('unreachable');
  return r;
}

const deadlineIn = (ms: number): number => Date.now() + ms;

/** A checkpoint of process `pid` into the directory `path`. */
function toDirectory(pid: number, migrationId: string, path: string, ms: number): CheckpointRequest {
  return { task: { kind: 'process', pid }, migrationId, destination: { kind: 'directory', path }, deadline: deadlineIn(ms) };
}

/** A checkpoint of the toy streamed to `target`, keeping its local files in `<work dir>/source`. */
function toTarget(toy: Toy, migrationId: string, target: ImageTarget, ms: number): CheckpointRequest {
  const sink = tcpImageSink({ host: target.host, port: target.port });
  return { task: { kind: 'process', pid: toy.pid }, migrationId, destination: { kind: 'stream', sink, localDir: join(toy.dir, 'source') }, deadline: deadlineIn(ms) };
}

interface ImageTarget {
  host: string;
  port: number;
  /** What the target's `receive` resolved to (throws if no stream reached it). */
  received(): Promise<EngineResult<ReceivedImage>>;
}

/**
 * A real target side: each image stream is received into `directory` with `engine`; `onConnection` then sees
 * the connection (to break it, or the target's directory). Closed after the test.
 */
async function imageTarget(
  engine: CriuEngine,
  opts: { directory: string; migrationId?: string; deadlineMs: number; onConnection?: (conn: Duplex) => void },
): Promise<ImageTarget> {
  let received: Promise<EngineResult<ReceivedImage>> | undefined;
  const listener = await listenForImageStreams({
    onConnection: (conn: Duplex) => {
      received = engine.receive({ connection: conn, directory: opts.directory, migrationId: opts.migrationId, deadline: deadlineIn(opts.deadlineMs) });
      opts.onConnection?.(conn);
    },
  });
  cleanups.push(() => listener.close());
  return {
    host: listener.host,
    port: listener.port,
    received: () => received ?? Promise.reject(new Error('no image stream reached the target')),
  };
}

/**
 * Once `dir` exists (and, with `ready`, its file names satisfy it), runs `act` once; polls every `everyMs` ms,
 * and stops polling after the test whatever happened.
 */
function whenDirectory(dir: string, everyMs: number, act: () => void, ready?: (files: string[]) => boolean): void {
  const iv = setInterval(() => {
    if (!existsSync(dir) || (ready && !ready(readdirSync(dir)))) return;
    clearInterval(iv);
    act();
  }, everyMs);
  cleanups.push(() => clearInterval(iv));
}

/** Restores the image in `path` (expecting ok); the restored process is killed after the test if still running. */
async function restoreFrom(engine: CriuEngine, migrationId: string, path: string, ms: number): Promise<RestoreResult> {
  const rs = expectOk(await engine.restore({ migrationId, source: { kind: 'directory', path }, deadline: deadlineIn(ms) }));
  if (rs.task.kind === 'process') started.push({ pid: rs.task.pid, marker: 'toy-llm' });
  return rs;
}

/** The restored toy runs to the end: its whole output is the uninterrupted run's — no gap, no repeat, prefill once. */
async function expectRestoredRunMatches(toy: Toy): Promise<void> {
  await waitFor(() => readOut(toy.out).done, 20_000, 'the restored toy to finish');
  const got = readOut(toy.out);
  expect(got.prefills).toBe(1);
  expect(got.tokens).toEqual(await toy.reference);
}

/**
 * This test process's children still waiting as exec holders (a restore started ahead, exec-holder.ts): a receive
 * that failed must leave none behind.
 */
function waitingHolders(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0')[0]!.endsWith('/exec-holder')) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** The toy still runs on the source: it keeps decoding, and all it wrote so far is the uninterrupted run's. */
async function expectStillDecoding(toy: Toy): Promise<void> {
  const before = readOut(toy.out).tokens.length;
  await waitFor(() => readOut(toy.out).tokens.length > before + 3, 5000, 'the toy to keep decoding');
  const ref = await toy.reference;
  const got = readOut(toy.out).tokens;
  expect(got).toEqual(ref.slice(0, got.length));
}

afterEach(async () => {
  for (const close of cleanups.splice(0).reverse()) await close();
  for (const { pid, marker } of started.splice(0)) killIfStill(pid, marker);
});

afterAll(() => {
  for (const d of workDirs) rmSync(d, { recursive: true, force: true });
});

describe.skipIf(!ready && !process.env.CI)('CriuEngine with real CRIU', () => {
  const engine = new CriuEngine();

  beforeAll(() => {
    if (!ready) throw new Error(`CRIU integration tests cannot run: ${whyNot}. Run scripts/install-criu.sh as root.`);
  });

  it('reports a usable CRIU 4.x', async () => {
    const caps = expectOk(await engine.capabilities({ deadline: deadlineIn(30_000) }));
    expect(caps.available, caps.reason).toBe(true);
    expect(Number(caps.version?.split('.')[0])).toBeGreaterThanOrEqual(4);
    expect(caps.streaming).toBe(true);
  });

  it('checkpoints to a directory and restores: the same token stream, no gap, no repeat, prefill once', async () => {
    const toy = await decodingToy({ stateMib: 64, tokens: 120, intervalMs: 20, decoded: 15 });

    const est = expectOk(await engine.estimate({ kind: 'process', pid: toy.pid }, { deadline: deadlineIn(5000) }));
    expect(est.memoryBytes).toBeGreaterThan(64 * 1024 * 1024);

    const images = join(toy.dir, 'images');
    const ck = expectOk(await engine.checkpoint(toDirectory(toy.pid, 'm-dir', images, 30_000)));
    expect(ck.taskState).toBe('gone');
    expect(ck.dataPath).toBe('directory');
    expect(await taskState(toy.pid)).toBe('gone'); // dead (maybe a zombie until reaped)
    expect(existsSync(join(images, 'dump.log'))).toBe(true);
    expect(ck.imageBytes).toBeGreaterThan(64 * 1024 * 1024);
    expect(ck.imageBytes).toBeLessThan(est.imageBytes * 1.5);
    const frozenTokens = readOut(toy.out).tokens.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(readOut(toy.out).tokens.length).toBe(frozenTokens); // really stopped

    const rs = await restoreFrom(engine, 'm-dir', images, 30_000);
    console.log(
      `criu 64 MiB toy, directory: image ${(ck.imageBytes / 1048576).toFixed(1)} MiB, checkpoint ${JSON.stringify(ck.phases)}, restore ${JSON.stringify(rs.phases)}`,
    );
    await expectRestoredRunMatches(toy);
  });

  it('a lazy (post-copy) restore runs the task before its memory is in place, fills it, and the stream is unchanged', async () => {
    const toy = await decodingToy({ stateMib: 128, tokens: 200, intervalMs: 10, decoded: 15 });
    const images = join(toy.dir, 'images');
    expectOk(await engine.checkpoint(toDirectory(toy.pid, 'm-lazy', images, 30_000)));
    const lazy = new CriuEngine({ lazyRestore: true });
    const rs = await restoreFrom(lazy, 'm-lazy', images, 30_000);
    expect(rs.memorySettled).toBeDefined();
    const settled = await rs.memorySettled!;
    expect(settled).toMatchObject({ ok: true });
    console.log(`criu 128 MiB toy, lazy restore: ${JSON.stringify(rs.phases)}, memory in place after ${settled.ms} ms`);
    expect(readdirSync(images)).toEqual(expect.arrayContaining(['lazy-pages.log']));
    await expectRestoredRunMatches(toy);
  });

  it('a lazy restore whose page daemon dies kills the task (it would read zeros) and leaves the image whole', async () => {
    const toy = await decodingToy({ stateMib: 256, tokens: 400, intervalMs: 10, decoded: 10 });
    const images = join(toy.dir, 'images');
    expectOk(await engine.checkpoint(toDirectory(toy.pid, 'm-lazy-die', images, 30_000)));
    const lazy = new CriuEngine({ lazyRestore: true });
    const rs = await restoreFrom(lazy, 'm-lazy-die', images, 30_000);
    // The daemon serves the pages from this image directory: take it down before it has pushed them all.
    execFileSync('pkill', ['-KILL', '-f', `lazy-pages -D ${images}`]);
    const settled = await rs.memorySettled!;
    expect(settled.ok).toBe(false);
    expect(settled.ok ? '' : settled.message).toMatch(/criu lazy-pages .* before every page was in place; the restored task was killed, the image is whole/);
    const pid = rs.task.kind === 'process' ? rs.task.pid : 0;
    expect(await taskState(pid)).toBe('gone');
    // Whole indeed: an eager restore of the same image continues the stream exactly.
    await restoreFrom(engine, 'm-lazy-die', images, 30_000);
    await expectRestoredRunMatches(toy);
  });

  it('restores eagerly, even when asked for lazy, a task a hook needs whole (the CUDA restore)', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 150, intervalMs: 10, decoded: 5 });
    const images = join(toy.dir, 'images');
    const gpuLike: EngineHook = { name: 'cuda', eagerRestore: true, appliesTo: async () => true, beforeCheckpoint: async () => {}, afterRestore: async () => {} };
    expectOk(await new CriuEngine({ hooks: [gpuLike] }).checkpoint(toDirectory(toy.pid, 'm-eager', images, 30_000)));
    const rs = await restoreFrom(new CriuEngine({ hooks: [gpuLike], lazyRestore: true }), 'm-eager', images, 30_000);
    expect(rs.memorySettled).toBeUndefined();
    expect(readdirSync(images)).not.toContain('lazy-pages.log');
    await expectRestoredRunMatches(toy);
  });

  it('streams the image through the page server to the target side and restores it there', async () => {
    const toy = await decodingToy({ stateMib: 64, tokens: 120, intervalMs: 20, decoded: 15 });
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, { directory: targetDir, migrationId: 'm-stream', deadlineMs: 30_000 });

    const progress: number[] = [];
    const ck = expectOk(await engine.checkpoint({ ...toTarget(toy, 'm-stream', target, 30_000), onProgress: (e) => e.phase === 'transfer' && progress.push(e.bytes) }));
    const rec = expectOk(await target.received());
    expect(ck.taskState).toBe('gone');
    expect(ck.dataPath).toMatch(/^direct channel \((native|agent) pump\)$/); // native where built (CI builds it)
    expect(rec.sourceStopped).toBe(true);
    expect(rec.imageBytes).toBe(ck.imageBytes);
    expect(progress.at(-1)).toBe(ck.imageBytes);
    // the bulk of the image never landed on the source's disk
    const sourceFiles = readdirSync(join(toy.dir, 'source'));
    expect(sourceFiles.some((f) => f.startsWith('pages-'))).toBe(false);
    expect(readdirSync(targetDir).some((f) => f.startsWith('pages-'))).toBe(true);
    expect(readdirSync(targetDir)).toContain('dump.log');
    expect(readdirSync(targetDir)).toContain('page-server.log');
    // The target's restore was started ahead (where the exec holder is built, as in CI): it waits for the restore.
    expect(waitingHolders()).toHaveLength(existsSync(join(ROOT, 'native/build/exec-holder')) ? 1 : 0);

    const rs = await restoreFrom(engine, 'm-stream', targetDir, 30_000);
    expect(waitingHolders()).toHaveLength(0);
    console.log(
      `criu 64 MiB toy, page-server stream: ${(ck.imageBytes / 1048576).toFixed(1)} MiB, checkpoint ${JSON.stringify(ck.phases)} (total ${ck.phases.dump! + (ck.phases.transfer ?? 0)} ms), restore ${JSON.stringify(rs.phases)}`,
    );
    await expectRestoredRunMatches(toy);
  });

  it('post-copy from the source: the task runs on the target while its memory is still on the source, which then serves it; the stream is unchanged', async () => {
    const toy = await decodingToy({ stateMib: 64, tokens: 120, intervalMs: 20, decoded: 15, pidNamespace: true });
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, { directory: targetDir, migrationId: 'm-postcopy', deadlineMs: 30_000 });
    const ck = expectOk(await new CriuEngine({ postCopy: true }).checkpoint(toTarget(toy, 'm-postcopy', target, 30_000)));
    expectOk(await target.received());
    expect(ck.dataPath).toBe('post-copy');
    // Frozen, not gone: CRIU holds the tree until the target has pulled its memory.
    expect(ck.taskState).toBe('stopped');
    expect(await taskState(toy.pid)).toBe('stopped');
    // What moved in the freeze is everything but the 64 MiB of state.
    expect(ck.imageBytes).toBeLessThan(16 * 1048576);

    const rs = await restoreFrom(engine, 'm-postcopy', targetDir, 30_000);
    expect(rs.postCopy).toBe(true);
    const [pages, memory] = await Promise.all([ck.pagesSettled!, rs.memorySettled!]);
    expect(memory.ok).toBe(true);
    expect(pages.ok).toBe(true);
    if (pages.ok) expect(pages.bytes).toBeGreaterThan(64 * 1048576);
    expect(await taskState(toy.pid)).toBe('gone');
    console.log(`criu 64 MiB toy, post-copy: checkpoint ${JSON.stringify(ck.phases)}, restore ${JSON.stringify(rs.phases)}, ${pages.ok ? pages.bytes : 0} bytes pulled in ${pages.ms} ms`);
    await expectRestoredRunMatches(toy);
  });

  it('a checkpoint told not to use post-copy (its pull would not end in time) streams, even where the engine offers it', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 100, intervalMs: 20, decoded: 10, pidNamespace: true });
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, { directory: targetDir, migrationId: 'm-nopostcopy', deadlineMs: 30_000 });
    const ck = expectOk(await new CriuEngine({ postCopy: true }).checkpoint({ ...toTarget(toy, 'm-nopostcopy', target, 30_000), postCopy: false }));
    expectOk(await target.received());
    expect(ck.dataPath).toMatch(/^direct channel/);
    expect(ck.pagesSettled).toBeUndefined();
    expect(ck.taskState).toBe('gone');
    const rs = await restoreFrom(engine, 'm-nopostcopy', targetDir, 30_000);
    expect(rs.postCopy).toBeUndefined();
    await expectRestoredRunMatches(toy);
  });

  it('post-copy whose target loses its page daemon: the target copy is killed, the task runs on the source again', async () => {
    const toy = await decodingToy({ stateMib: 256, tokens: 400, intervalMs: 20, decoded: 10, pidNamespace: true });
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, { directory: targetDir, migrationId: 'm-postcopy-die', deadlineMs: 30_000 });
    const ck = expectOk(await new CriuEngine({ postCopy: true }).checkpoint(toTarget(toy, 'm-postcopy-die', target, 30_000)));
    expectOk(await target.received());
    const rs = await restoreFrom(engine, 'm-postcopy-die', targetDir, 30_000);
    execFileSync('pkill', ['-KILL', '-f', `lazy-pages -D ${targetDir}`]);
    const [pages, memory] = await Promise.all([ck.pagesSettled!, rs.memorySettled!]);
    expect(memory.ok).toBe(false);
    expect(rs.task.kind === 'process' && (await taskState(rs.task.pid))).toBe('gone');
    expect(pages).toMatchObject({ ok: false, taskState: 'running' });
    // CRIU's page server may take the daemon's end for "done" (a clean close) or see the connection reset: either
    // way the target did not confirm, and the source's tree runs again.
    expect(pages.ok ? '' : pages.message).toMatch(/^post-copy: (the target did not confirm every page in place|criu dump exited .* before the target had every page).*; the task is running on the source/);
    // It decodes on: every line is the uninterrupted run's (the target's copy may have written a few of them already,
    // which the source writes again), and no token is missing.
    const before = readOut(toy.out).tokens.length;
    await waitFor(() => readOut(toy.out).tokens.length > before + 5, 10_000, 'the toy to decode on the source again');
    expectRepeatsButNoGap(readOut(toy.out).tokens, await toy.reference);
  });

  it('a dump of a pid that does not exist fails fatal with TASK_NOT_FOUND', async () => {
    const r = await engine.checkpoint(toDirectory(4_000_000, 'm-nopid', join(workDir(), 'img'), 10_000));
    expectFailure(r, { status: 'fatal', code: 'TASK_NOT_FOUND', taskState: 'gone' });
  });

  it('a dump CRIU rejects leaves the task running and says so (unsupported option)', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 400, intervalMs: 10, decoded: 5 });
    const broken = new CriuEngine({ extraDumpArgs: ['--no-such-criu-option'] });
    const r = expectFailure(await broken.checkpoint(toDirectory(toy.pid, 'm-badopt', join(toy.dir, 'img'), 10_000)), {
      status: 'fatal',
      code: 'INVALID_REQUEST',
      taskState: 'running',
    });
    expect(r.message).toMatch(/no-such-criu-option/);
    expect(r.message).toMatch(/still running on the source/);
    await expectStillDecoding(toy);
  });

  it('a dump that fails inside CRIU (established TCP connection) resumes the task, which keeps serving', async () => {
    const dir = workDir();
    const sockets: Socket[] = [];
    const server: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    // An "inference server" holding a client connection: it echoes every byte back.
    const script = `const s=require('net').connect(${port},'127.0.0.1');s.on('data',d=>s.write(d));setInterval(()=>{},1000);`;
    const child = spawn(process.execPath, ['-e', script], { detached: true, stdio: 'ignore', env: { ...process.env, UV_USE_IO_URING: '0' } });
    child.unref();
    cleanups.push(() => {
      child.kill('SIGKILL');
      for (const s of sockets) s.destroy();
      server.close();
    });
    await waitFor(() => sockets.length === 1, 5000, 'the connection');
    const r = expectFailure(await engine.checkpoint(toDirectory(child.pid!, 'm-tcp', join(dir, 'img'), 10_000)), { status: 'fatal', taskState: 'running' });
    // CRIU ≥ 4.2: "Connected TCP socket, consider using --tcp-established"; 4.1 on Linux ≥ 6.16 cannot dump inet sockets at all
    expect(['TASK_UNSUPPORTED', 'ENGINE_UNAVAILABLE']).toContain(r.code);
    expect(r.logPath && existsSync(r.logPath)).toBeTruthy();
    expect(await taskState(child.pid!)).toBe('running');
    const echoed = new Promise<string>((res) => sockets[0]!.once('data', (d) => res(d.toString())));
    sockets[0]!.write('ping');
    expect(await echoed).toBe('ping');
  });

  it('a relayed stream that breaks in the middle of the dump leaves the task running on the source', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 400, intervalMs: 10, decoded: 5 });
    // A real target whose connection drops in the middle of the relayed pages.
    const relayEngine = new CriuEngine({ directPages: false });
    let seen = 0;
    const target = await imageTarget(relayEngine, {
      directory: join(toy.dir, 'target'),
      deadlineMs: 15_000,
      onConnection: (conn) =>
        conn.on('data', (d: Buffer) => {
          seen += d.length;
          if (seen > 4 * 1024 * 1024) conn.destroy();
        }),
    });
    expectFailure(await relayEngine.checkpoint(toTarget(toy, 'm-broken', target, 15_000)), { status: 'retryable', code: 'TRANSPORT_FAILED', taskState: 'running' });
    expectFailure(await target.received(), { status: 'retryable', code: 'TRANSPORT_FAILED' });
    // and what it produced is still exactly the reference stream, so far
    await expectStillDecoding(toy);
  });

  it('a direct page channel whose target fails in the middle of the dump leaves the task running on the source', async () => {
    const toy = await decodingToy({ stateMib: 64, tokens: 400, intervalMs: 10, decoded: 5 });
    // A real target: once pages arrive over the direct channel, its agent connection drops (the agent died).
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, {
      directory: targetDir,
      deadlineMs: 15_000,
      onConnection: (conn) =>
        whenDirectory(targetDir, 1, () => conn.destroy(), (files) => files.some((f) => f.startsWith('pages-'))),
    });
    expectFailure(await engine.checkpoint(toTarget(toy, 'm-broken-direct', target, 15_000)), { status: 'retryable', code: 'TRANSPORT_FAILED', taskState: 'running' });
    expect((await target.received()).status).not.toBe('ok');
    await expectStillDecoding(toy);
    // The restore the target had started ahead (exec holder) ended with its receive.
    await waitFor(() => waitingHolders().length === 0, 3000, 'the target\'s held restore to end');
  });

  it('a target that fails after the dump (taking the image files) gets the task resumed on the source', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 400, intervalMs: 10, decoded: 5 });
    const targetDir = join(toy.dir, 'target');
    const target = await imageTarget(engine, {
      directory: targetDir,
      deadlineMs: 15_000,
      // sabotage: a file the source will send already exists on the target, so the target fails at that file
      onConnection: () => whenDirectory(targetDir, 2, () => writeFileSync(join(targetDir, 'inventory.img'), 'stale')),
    });
    const r = expectFailure(await engine.checkpoint(toTarget(toy, 'm-late-fail', target, 15_000)), {
      status: 'retryable',
      code: 'TRANSPORT_FAILED',
      taskState: 'running', // it was left stopped by the dump, and resumed
    });
    expect(r.message).toMatch(/after the dump/);
    expect(r.message).toMatch(/peer reported/);
    expect((await target.received()).status).not.toBe('ok');
    await expectStillDecoding(toy);
    await waitFor(() => waitingHolders().length === 0, 3000, 'the target\'s held restore to end');
  });

  it('runs hooks around the dump and the restore (the seam for the CUDA checkpoint), and a failing hook stops the checkpoint', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 150, intervalMs: 10, decoded: 5 });
    const dir = toy.dir;
    const calls: string[] = [];
    let hookRanAt = 0;
    const recorder: EngineHook = {
      name: 'recorder',
      estimate: async () => ({ gpuMemoryBytes: 1024 }),
      beforeCheckpoint: async (c) => {
        calls.push(`beforeCheckpoint ${c.pids[0]}`);
        hookRanAt = Date.now();
        await new Promise((r) => setTimeout(r, 50)); // a hook that takes a while, like the CUDA lock + checkpoint
      },
      afterCheckpoint: async (c) => void calls.push(`afterCheckpoint ok=${c.ok} ${c.taskState}`),
      beforeRestore: async (c) => void calls.push(`beforeRestore ${existsSync(join(c.directory, 'inventory.img'))}`),
      afterRestore: async (c) => void calls.push(`afterRestore ${c.task.kind === 'process' && c.task.pid === c.pids[0]}`),
    };
    const failing: EngineHook = { name: 'cuda', beforeCheckpoint: async () => Promise.reject(new Error('cuCheckpointProcessLock: CUDA_ERROR_NOT_READY')) };

    const broken = new CriuEngine({ hooks: [recorder, failing] });
    const r = await broken.checkpoint(toDirectory(toy.pid, 'm-hookfail', join(dir, 'img0'), 10_000));
    expectFailure(r, { status: 'retryable', code: 'HOOK_FAILED', taskState: 'running' });
    expect(calls).toEqual([`beforeCheckpoint ${toy.pid}`, 'afterCheckpoint ok=false running']);
    expect(existsSync(join(dir, 'img0', 'dump.log'))).toBe(false); // criu never ran

    // A hook that knows better (no GPU driver here) says so; the engine passes its code and status on.
    calls.length = 0;
    const noDriver: EngineHook = { name: 'cuda', beforeCheckpoint: async () => Promise.reject(Object.assign(new Error('libcuda.so.1 not found'), { engineCode: 'ENGINE_UNAVAILABLE', engineStatus: 'fatal' })) };
    const r2 = await new CriuEngine({ hooks: [noDriver] }).checkpoint(toDirectory(toy.pid, 'm-nodriver', join(dir, 'img1'), 10_000));
    expectFailure(r2, { status: 'fatal', code: 'ENGINE_UNAVAILABLE', taskState: 'running' });

    calls.length = 0;
    const hooked = new CriuEngine({ hooks: [recorder] });
    expect(expectOk(await hooked.estimate({ kind: 'process', pid: toy.pid }, { deadline: deadlineIn(5000) })).gpuMemoryBytes).toBe(1024);
    const hookedCkpt = expectOk(await hooked.checkpoint(toDirectory(toy.pid, 'm-hook', join(dir, 'img'), 10_000)));
    // Downtime starts when the first pre-dump hook starts (the CUDA lock stops the work), not at CRIU's freeze.
    expect(hookedCkpt.frozenAt).toBeLessThanOrEqual(hookRanAt);
    expect(hookRanAt - hookedCkpt.frozenAt).toBeLessThan(50);
    expect(hookedCkpt.phases['hook.recorder']).toBeGreaterThanOrEqual(49); // each hook's own time, by name
    const hookedRestore = await restoreFrom(hooked, 'm-hook', join(dir, 'img'), 10_000);
    expect(hookedRestore.phases['hookAfter.recorder']).toBeGreaterThanOrEqual(0);
    expect(calls).toEqual([`beforeCheckpoint ${toy.pid}`, 'afterCheckpoint ok=true gone', 'beforeRestore true', 'afterRestore true']);
    await expectRestoredRunMatches(toy);
  });

  it('a restore whose after-restore hook fails leaves nothing running, and the image restores again (no second copy)', async () => {
    const toy = await decodingToy({ stateMib: 16, tokens: 150, intervalMs: 10, decoded: 5 });
    const images = join(toy.dir, 'img');
    // Checkpointed with a hook of that name (it applied: the image says so), restored with one that fails.
    expectOk(await new CriuEngine({ hooks: [{ name: 'cuda' }] }).checkpoint(toDirectory(toy.pid, 'm-afterfail', images, 10_000)));
    let restoredPid = 0;
    const failing: EngineHook = {
      name: 'cuda',
      afterRestore: async (c) => {
        restoredPid = c.pids[0] ?? 0;
        throw new Error('cuCheckpointProcessRestore: CUDA_ERROR_ILLEGAL_STATE');
      },
    };
    const r = await new CriuEngine({ hooks: [failing] }).restore({ migrationId: 'm-afterfail', source: { kind: 'directory', path: images }, deadline: deadlineIn(15_000) });
    const f = expectFailure(r, { status: 'retryable', code: 'HOOK_FAILED', taskState: 'gone' });
    expect(f.message).toMatch(/the restored tree was killed, the image is whole/);
    expect(restoredPid).toBeGreaterThan(0);
    expect(await taskState(restoredPid)).toBe('gone');
    // The same image, restored again without the failing hook: the run continues exactly. The toy has no CUDA
    // lock holding it between CRIU's restore and the hook, so the killed copy may have written a token or two;
    // the second copy writes the same ones again (same image, same state): identical lines, nothing else.
    await restoreFrom(engine, 'm-afterfail', images, 15_000);
    await waitFor(() => readOut(toy.out).done, 20_000, 'the restored toy to finish');
    const got = readOut(toy.out);
    const byIndex = new Map<string, string>();
    for (const line of got.tokens) {
      const index = line.split(' ')[0]!;
      if (byIndex.has(index)) expect(line).toBe(byIndex.get(index));
      byIndex.set(index, line);
    }
    expect([...byIndex.values()]).toEqual(await toy.reference);
    expect(got.tokens.length - byIndex.size).toBeLessThanOrEqual(3);
    expect(got.prefills).toBe(1);
  });

  it('task control around a dump that fails: the task is told to prepare, then to resume on the source, and keeps its stream', async () => {
    const port = await freePort();
    const toy = await decodingToy({ stateMib: 16, tokens: 300, intervalMs: 10, decoded: 5, extraArgs: ['--weights-mib', '32', '--control-port', String(port)] });
    const base = `http://127.0.0.1:${port}`;
    const withControl = new CriuEngine({ hooks: [new TaskControlHook()], extraDumpArgs: ['--no-such-option'] });
    const request = toDirectory(toy.pid, 'm-ctl-fail', join(toy.dir, 'img'), 15_000);
    request.task = { kind: 'process', pid: toy.pid, control: { prepareUrl: `${base}/prepare`, resumeUrl: `${base}/resume`, releasableBytes: 32 * 1024 * 1024 } };
    expectFailure(await withControl.checkpoint(request), { taskState: 'running' });
    await expectStillDecoding(toy);
    const text = readFileSync(toy.out, 'utf8');
    const prepared = /^# prepare at token (\d+) released=33554432$/m.exec(text);
    const resumed = new RegExp(`^# resume at token (\\d+) pid=${toy.pid} `, 'm').exec(text);
    expect(prepared).not.toBeNull();
    expect(resumed?.[1]).toBe(prepared?.[1]);
  });

  it('refuses a checkpoint that cannot meet its deadline and leaves the task alone', async () => {
    const toy = await decodingToy({ stateMib: 64, tokens: 400, intervalMs: 10, decoded: 2 });
    const slow = new CriuEngine({ rates: { checkpointBytesPerSec: 10e6 } }); // 64 MiB would take ~7 s
    const r = await slow.checkpoint(toDirectory(toy.pid, 'm-late', join(toy.dir, 'img'), 2000));
    expectFailure(r, { status: 'fatal', code: 'DEADLINE_TOO_CLOSE', taskState: 'running' });
    expect(existsSync(join(toy.dir, 'img'))).toBe(false);
    const past = await engine.restore({ migrationId: 'm-late', source: { kind: 'directory', path: join(toy.dir, 'img') }, deadline: Date.now() - 1 });
    expectFailure(past, { code: 'DEADLINE_TOO_CLOSE' });
  });
});
