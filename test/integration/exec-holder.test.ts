/**
 * The exec holder (native/exec-holder.c, src/engines/criu/exec-holder.ts, prepareCriu in criu-process.ts), built
 * here with scripts/build-native.sh and run for real: a process started ahead of time becomes the program it is
 * given later — same pid, the descriptors it was started with (stdin socket, status pipe), output and exit status
 * as a directly spawned one; a holder that is not needed exits; one that died before its command line came is
 * reported, not waited for; binaries that are missing, switched off or not the holder are not used.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildNative } from '../support/native.js';
import { prepareCriu } from '../../src/engines/criu/criu-process.js';
import { holderCommandLine, locateExecHolder } from '../../src/engines/criu/exec-holder.js';
import { pidExists } from '../../src/engines/criu/proc.js';

const work = mkdtempSync(join(tmpdir(), 'spotwatch-holder-test-'));
const HOLDER = buildNative('exec-holder', join(work, 'bin'));

afterAll(() => rmSync(work, { recursive: true, force: true }));

const deadline = (): number => Date.now() + 10_000;

async function exited(pid: number, ms = 3000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until; await new Promise((r) => setTimeout(r, 10))) if (!pidExists(pid) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) return true;
  return false;
}

/** Pids of this test's holders still waiting for a command line (`HOLDER 3`), read from /proc. */
function heldProcesses(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8') === `${HOLDER}\u00003\u0000`) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('exec holder', () => {
  it('becomes the program it is given later: same pid, its output and exit status, in its own session', async () => {
    const prepared = prepareCriu('/bin/sh', HOLDER, {});
    await new Promise((r) => setTimeout(r, 100)); // held, waiting for its command line
    const run = prepared.start(['-c', `echo "pid $$ sid $(cut -d' ' -f6 /proc/$$/stat)"; echo oops >&2; exit 3`], { deadline: deadline() });
    const exit = await run.done;
    expect(exit.code).toBe(3);
    expect(exit.stderr).toBe('oops\n');
    const [, pid, , sid] = exit.stdout.trim().split(/\s+/);
    expect(Number(pid)).toBe(run.child.pid);
    expect(Number(sid)).toBe(run.child.pid); // detached: a session of its own, as startCriu gives CRIU
  });

  it('keeps the descriptors it was started with: the stdin socket and the status pipe', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const ours = connect((server.address() as { port: number }).port, '127.0.0.1');
    await new Promise<void>((r) => ours.once('connect', r));
    const theirs = await accepted;
    const prepared = prepareCriu('/bin/sh', HOLDER, { stdinSocket: theirs, statusPipe: true });
    theirs.destroy(); // as the engine does: the held process owns the socket now
    ours.write('hello from the source\n');
    const run = prepared.start(['-c', 'read line; printf R >&3; echo "got: $line"'], { deadline: deadline() });
    const status = new Promise<string>((r) => run.status!.once('data', (d: Buffer) => r(d.toString())));
    const exit = await run.done;
    expect(exit.code).toBe(0);
    expect(exit.stdout).toBe('got: hello from the source\n');
    expect(await status).toBe('R');
    ours.destroy();
    server.close();
  });

  it('a holder that is not needed exits without running anything', async () => {
    const prepared = prepareCriu('/bin/sh', HOLDER, {});
    await new Promise((r) => setTimeout(r, 50));
    const pids = heldProcesses();
    expect(pids.length).toBeGreaterThan(0);
    prepared.cancel();
    for (const pid of pids) expect(await exited(pid)).toBe(true);
    // start after cancel would not run anything either: the holder is gone
  });

  it('a holder that died before its command line is reported at start, not waited for', async () => {
    const prepared = prepareCriu('/bin/sh', HOLDER, {});
    await new Promise((r) => setTimeout(r, 50));
    const pid = Math.max(...heldProcesses());
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    const exit = await prepared.start(['-c', 'exit 0'], { deadline: deadline() }).done;
    expect(exit.spawnError?.message).toMatch(/exec holder ended before criu could run \(SIGKILL\)/);
  });

  it('a holder that cannot exec its program says why and exits 127', async () => {
    const exit = await prepareCriu('/nonexistent/criu', HOLDER, {}).start(['--version'], { deadline: deadline() }).done;
    expect(exit.code).toBe(127);
    expect(exit.stderr).toMatch(/error exec \/nonexistent\/criu: No such file or directory/);
  });

  it('the deadline kills a held program like a spawned one', async () => {
    const exit = await prepareCriu('/bin/sh', HOLDER, {}).start(['-c', 'sleep 30'], { deadline: Date.now() + 200 }).done;
    expect(exit.killedFor).toBe('deadline');
    expect(exit.signal).toBe('SIGKILL');
  });

  it('is used only where it runs and is not switched off', async () => {
    expect(await locateExecHolder({ SPOTWATCH_EXEC_HOLDER_BIN: HOLDER })).toBe(HOLDER);
    expect(await locateExecHolder({ SPOTWATCH_EXEC_HOLDER_BIN: HOLDER, SPOTWATCH_EXEC_HOLDER: 'off' })).toBeUndefined();
    expect(await locateExecHolder({ SPOTWATCH_EXEC_HOLDER_BIN: join(work, 'missing') })).toBeUndefined();
    expect(await locateExecHolder({ SPOTWATCH_EXEC_HOLDER_BIN: '/bin/true' })).toBeUndefined(); // runs, but is not the holder
  });

  it('command lines are NUL-separated and cannot smuggle a NUL', () => {
    expect(holderCommandLine('/usr/sbin/criu', ['restore', '-D', '/img']).toString()).toBe('/usr/sbin/criu\0restore\0-D\0/img\0');
    expect(() => holderCommandLine('/usr/sbin/criu', ['a\0b'])).toThrow(/NUL byte/);
  });
});
