/**
 * The native page pump (native/page-pump.c, src/engines/criu/native-page-pump.ts), built here with
 * scripts/build-native.sh and run for real: bytes through it unchanged in both directions, progress, its exit on a
 * broken channel, and that the CRIU engine's direct page channel really goes through it (a real dump and restore
 * of the toy LLM, through a wrapper that records the pump's start).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildNative } from '../support/native.js';
import { locateCriu } from '../../src/engines/criu/criu-binary.js';
import { CriuEngine } from '../../src/engines/criu/criu-engine.js';
import { locatePagePump, pagePumpMode, startNativePagePump } from '../../src/engines/criu/native-page-pump.js';
import { listenForImageStreams, tcpImageSink } from '../../src/engines/criu/transport.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TOY = join(ROOT, 'examples/toy-llm/toy-llm.mjs');
const work = mkdtempSync(join(tmpdir(), 'spotwatch-pump-test-'));
const PUMP = buildNative('page-pump', join(work, 'bin'));

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Two connected TCP sockets on loopback: [ours, theirs]. */
async function socketPair(): Promise<[Socket, Socket, Server]> {
  const server = createServer({ allowHalfOpen: true }); // the page server answers after the dump's end
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const ours = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise<void>((r, j) => ours.once('connect', r).once('error', j));
  return [ours, await accepted, server];
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('native page pump', () => {
  it('moves the dump side to the channel unchanged, the replies back, reports progress, and exits 0 at the end', async () => {
    // "dump" = the socket whose peer the pump reads as fd 1; "server" = the page server at the far end of fd 0.
    const [dumpSide, pumpDumpEnd, s1] = await socketPair();
    const [serverSide, pumpChannelEnd, s2] = await socketPair();
    const payload = randomBytes(48 << 20);
    const totals: number[] = [];
    const pump = startNativePagePump(PUMP, pumpChannelEnd, pumpDumpEnd, (n) => totals.push(n));

    const receivedChunks: Buffer[] = [];
    const serverDone = new Promise<void>((r) => serverSide.on('end', r));
    serverSide.on('data', (c: Buffer) => receivedChunks.push(c));
    const replies: Buffer[] = [];
    dumpSide.on('data', (c: Buffer) => replies.push(c));
    const dumpSeesEnd = new Promise<void>((r) => dumpSide.on('end', r));

    dumpSide.end(payload);
    await serverDone;
    serverSide.end(Buffer.from('reply: session over'));
    await dumpSeesEnd;
    expect(await pump.done).toBe(payload.length);
    expect(sha(Buffer.concat(receivedChunks))).toBe(sha(payload));
    expect(Buffer.concat(replies).toString()).toBe('reply: session over');
    expect(totals.at(-1)).toBe(payload.length);
    expect(totals.length).toBeGreaterThan(1); // every 32 MiB and at the end
    for (const s of [dumpSide, serverSide]) s.destroy();
    s1.close();
    s2.close();
  });

  it('fails with its own message when the channel breaks in the middle', async () => {
    const [dumpSide, pumpDumpEnd, s1] = await socketPair();
    const [serverSide, pumpChannelEnd, s2] = await socketPair();
    const pump = startNativePagePump(PUMP, pumpChannelEnd, pumpDumpEnd, () => {});
    let got = 0;
    serverSide.on('data', (c: Buffer) => {
      got += c.length;
      if (got > 1 << 20) serverSide.resetAndDestroy();
    });
    dumpSide.on('error', () => {});
    // keep writing until the pump gives up
    const chunk = randomBytes(1 << 20);
    const writer = setInterval(() => dumpSide.writable && dumpSide.write(chunk), 1);
    await expect(pump.done).rejects.toThrow(/page pump failed \(exit 1\): (writing to|reading from) the page channel: Connection reset by peer/);
    clearInterval(writer);
    dumpSide.destroy();
    s1.close();
    s2.close();
  });

  it('refuses to run without sockets on fds 0 and 1 (exit 2, says what it needs)', () => {
    const r = (() => {
      try {
        execFileSync(PUMP, [], { stdio: ['ignore', 'ignore', 'pipe'] });
        return { status: 0, stderr: '' };
      } catch (err) {
        const e = err as { status: number; stderr: Buffer };
        return { status: e.status, stderr: e.stderr.toString() };
      }
    })();
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/fd 0 and fd 1 must be sockets/);
  });

  it('is located from SPOTWATCH_PAGE_PUMP_BIN, and SPOTWATCH_PAGE_PUMP=node turns it off', async () => {
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP_BIN: PUMP })).toBe(PUMP);
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP_BIN: join(work, 'missing') })).toBeUndefined();
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP: 'node', SPOTWATCH_PAGE_PUMP_BIN: PUMP })).toBeUndefined();
    // An executable that is not the pump (or cannot run here) is not used: the agent pumps itself.
    const impostor = join(work, 'not-a-pump');
    writeFileSync(impostor, '#!/bin/sh\nexit 0\n');
    chmodSync(impostor, 0o755);
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP_BIN: impostor })).toBeUndefined();
    const garbage = join(work, 'garbage-pump');
    writeFileSync(garbage, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0, 0]));
    chmodSync(garbage, 0o755);
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP_BIN: garbage })).toBeUndefined();
    expect(pagePumpMode({})).toBe('native');
    expect(pagePumpMode({ SPOTWATCH_PAGE_PUMP: 'criu' })).toBe('criu');
    expect(await locatePagePump({ SPOTWATCH_PAGE_PUMP: 'criu', SPOTWATCH_PAGE_PUMP_BIN: PUMP })).toBeUndefined();
  });
});

const criu = await locateCriu();
const criuReady = criu.ok && process.getuid?.() === 0;

describe.skipIf(!criuReady && !process.env.CI)('the CRIU engine pages through the native pump', () => {
  it.each([
    { mode: 'native', pumpStarts: ['started'] },
    // measurement mode: `criu dump` writes the channel itself, no pump
    { mode: 'criu', pumpStarts: [] },
  ])('SPOTWATCH_PAGE_PUMP=$mode: a real toy LLM streams to a target, restores there and continues its exact token stream', async ({ mode, pumpStarts }) => {
    const dir = mkdtempSync(join(work, 'toy-'));
    // A wrapper that records each start with the sockets (not the engine's probe, which has none), then runs the
    // real pump.
    const marks = join(dir, 'pump-starts');
    const wrapper = join(dir, 'page-pump');
    writeFileSync(wrapper, `#!/bin/sh\n[ -S /dev/stdin ] && echo started >>'${marks}'\nexec '${PUMP}' "$@"\n`);
    chmodSync(wrapper, 0o755);

    const out = join(dir, 'tokens.txt');
    const args = ['--prompt-tokens', '64', '--state-mib', '64', '--tokens', '120', '--interval-ms', '20', '--seed', '3'];
    const err = openSync(join(dir, 'toy.err'), 'a');
    const child = spawn(process.execPath, [TOY, ...args, '--out', out], { detached: true, stdio: ['ignore', 'ignore', err], env: { ...process.env, UV_USE_IO_URING: '0' } });
    closeSync(err);
    child.unref();
    const reference = execFileSync(process.execPath, [TOY, ...args, '--reference'], { encoding: 'utf8' }).trim().split('\n');
    const tokens = (): string[] => (existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')) : []);
    for (let i = 0; i < 300 && tokens().length < 10; i++) await new Promise((r) => setTimeout(r, 50));

    const engine = new CriuEngine();
    const target = join(dir, 'target');
    let received: ReturnType<CriuEngine['receive']> | undefined;
    const listener = await listenForImageStreams({
      onConnection: (conn) => {
        received = engine.receive({ connection: conn, directory: target, migrationId: `m-pump-${mode}`, deadline: Date.now() + 30_000 });
      },
    });
    const saved = { bin: process.env.SPOTWATCH_PAGE_PUMP_BIN, mode: process.env.SPOTWATCH_PAGE_PUMP };
    process.env.SPOTWATCH_PAGE_PUMP_BIN = wrapper;
    process.env.SPOTWATCH_PAGE_PUMP = mode;
    let restoredPid: number | undefined;
    try {
      const sink = tcpImageSink({ host: listener.host, port: listener.port });
      const ck = await engine.checkpoint({ task: { kind: 'process', pid: child.pid! }, migrationId: `m-pump-${mode}`, destination: { kind: 'stream', sink, localDir: join(dir, 'source') }, deadline: Date.now() + 30_000 });
      expect(ck.status).toBe('ok');
      if (ck.status === 'ok') expect(ck.value.dataPath).toBe(mode === 'native' ? 'direct channel (native pump)' : 'direct channel (criu)');
      const rec = await received!;
      expect(rec.status).toBe('ok');
      expect(existsSync(marks) ? readFileSync(marks, 'utf8').trim().split('\n') : []).toEqual(pumpStarts);
      const rs = await engine.restore({ migrationId: `m-pump-${mode}`, source: { kind: 'directory', path: target }, deadline: Date.now() + 30_000 });
      if (rs.status !== 'ok') throw new Error(`restore failed: ${rs.message}`);
      if (rs.value.task.kind === 'process') restoredPid = rs.value.task.pid;
      for (let i = 0; i < 400 && !readFileSync(out, 'utf8').includes('# done'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(tokens()).toEqual(reference);
      expect(readFileSync(out, 'utf8').match(/^# prefill/gm)).toHaveLength(1);
    } finally {
      process.env.SPOTWATCH_PAGE_PUMP_BIN = saved.bin;
      if (saved.bin === undefined) delete process.env.SPOTWATCH_PAGE_PUMP_BIN;
      if (saved.mode !== undefined) process.env.SPOTWATCH_PAGE_PUMP = saved.mode;
      else delete process.env.SPOTWATCH_PAGE_PUMP;
      await listener.close();
      for (const pid of [child.pid, restoredPid]) {
        try {
          if (pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('toy-llm')) process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  });
});
