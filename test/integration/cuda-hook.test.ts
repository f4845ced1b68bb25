/**
 * The CUDA hook end to end on a machine without a GPU, with every spotwatch component real:
 *
 * - the native helper is built here (scripts/build-cuda-helper.sh) and run for real. This machine has no
 *   NVIDIA driver, so it must exit with the "no driver" code, and the hook must turn that into
 *   ENGINE_UNAVAILABLE without touching the task.
 * - The state machine (lock → checkpoint → restore → unlock, rollback on every failure path) runs against
 *   TEST DOUBLES OF THE DRIVER — which CI cannot have — never of spotwatch's own code: a fake libcuda.so built
 *   here from native/test/fake-libcuda.c and loaded by the real helper (SPOTWATCH_CUDA_LIBRARY), and a fake
 *   `cuda-checkpoint` executable standing in for NVIDIA's tool. They implement the documented CUprocessState
 *   transitions and inject failures from the environment (FAKE_CUDA_FAIL, FAKE_CUDA_INIT_FAIL, …).
 * - With root and CRIU, the hook runs inside the real CriuEngine around a real dump and restore of a real
 *   process (whose "CUDA state" lives in the driver double).
 *
 * Without a C compiler these tests are skipped locally but FAIL under CI (`CI` set).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HookContext } from '../../src/engines/checkpoint-engine.js';
import { locateCriu } from '../../src/engines/criu/criu-binary.js';
import { CriuEngine } from '../../src/engines/criu/criu-engine.js';
import { taskState } from '../../src/engines/criu/proc.js';
import { CudaCheckpointHook, CudaHookError, HelperBackend, HelperExit, NvidiaToolBackend, hookFailure } from '../../src/engines/cuda/index.js';
import type { CudaHookOptions } from '../../src/engines/cuda/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cc = ['cc', 'gcc', 'clang'].find((c) => spawnSync(c, ['--version']).status === 0);
if (!cc && !process.env.CI) console.warn('cuda-hook integration tests SKIPPED: no C compiler (they fail under CI)');

let work = '';
let helper = '';
let fakeLib = '';
let oldLib = '';
let fakeTool = '';
const children: number[] = [];

/** A real process to stand for the GPU task (its own session, as spotwatch starts tasks). */
function startTask(): number {
  const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  child.unref();
  children.push(child.pid as number);
  return child.pid as number;
}

const STATE = { running: 0, locked: 1, checkpointed: 2, failed: 3 } as const;

/** A fresh driver double: its state directory, its call log, and the helper's environment. */
function driver(extra: Record<string, string> = {}, lib = fakeLib) {
  const dir = mkdtempSync(join(work, 'drv-'));
  const log = join(dir, 'calls.log');
  const env: NodeJS.ProcessEnv = { ...process.env, SPOTWATCH_CUDA_LIBRARY: lib, FAKE_CUDA_DIR: dir, FAKE_CUDA_LOG: log, ...extra };
  return {
    env,
    set: (pid: number, s: keyof typeof STATE) => writeFileSync(join(dir, String(pid)), `${STATE[s]}\n`),
    get: (pid: number) => Number(readFileSync(join(dir, String(pid)), 'utf8').trim()),
    calls: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean) : []),
    ops: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' ')[0]) : []),
  };
}

function hookWith(env: NodeJS.ProcessEnv, opts: Partial<CudaHookOptions> = {}): CudaCheckpointHook {
  return new CudaCheckpointHook({
    backend: new HelperBackend(helper, env),
    // No /dev/nvidia* on this machine: the task's processes are declared GPU processes.
    gpuPids: async (pids) => [...pids],
    cudaPids: async (pids) => [...pids],
    gpuMemory: async () => new Map(),
    ...opts,
  });
}

function ctx(pid: number, over: Partial<HookContext> = {}): HookContext {
  return { task: { kind: 'process', pid, id: 'gpu-task' }, migrationId: `m-${pid}-${Math.random()}`, deadline: Date.now() + 30_000, signal: new AbortController().signal, pids: [pid], ...over };
}

async function rejection(p: Promise<unknown>): Promise<CudaHookError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CudaHookError);
    return err as CudaHookError;
  }
  throw new Error('expected the hook to fail');
}

beforeAll(() => {
  if (!cc) {
    if (process.env.CI) throw new Error('no C compiler: the CUDA helper cannot be built (install gcc)');
    return;
  }
  work = mkdtempSync(join(tmpdir(), 'spotwatch-cuda-test-'));
  const out = execFileSync('bash', [join(ROOT, 'scripts/build-cuda-helper.sh')], {
    env: { ...process.env, SPOTWATCH_CUDA_HELPER_OUT: join(work, 'bin') },
    encoding: 'utf8',
  });
  helper = out.trim().split('\n').pop() as string;
  const src = join(ROOT, 'native/test/fake-libcuda.c');
  fakeLib = join(work, 'libcuda-double.so');
  oldLib = join(work, 'libcuda-double-old.so');
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-o', fakeLib, src]);
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-DFAKE_OLD_DRIVER', '-o', oldLib, src]);
  // A test double of NVIDIA's cuda-checkpoint utility, same state files and failure switches.
  fakeTool = join(work, 'cuda-checkpoint');
  mkdirSync(dirname(fakeTool), { recursive: true });
  writeFileSync(
    fakeTool,
    `#!/usr/bin/env bash
# TEST DOUBLE of NVIDIA's cuda-checkpoint (CLI of r570+): --get-state / --action X --pid P [--timeout MS]
op=""; action=""; pid=""; timeout=""
while [ $# -gt 0 ]; do case "$1" in
  --get-state) op=state;; --action) op=action; action=$2; shift;; --pid|-p) pid=$2; shift;;
  --timeout|-t) timeout=$2; shift;; --help|-h) echo "CUDA checkpoint and restore utility."; exit 0;;
  *) echo "unknown option $1" >&2; exit 1;; esac; shift; done
f="$FAKE_CUDA_DIR/$pid"
[ -f "$f" ] || { echo "Could not get state of process $pid: CUDA_ERROR_NOT_INITIALIZED" >&2; exit 1; }
st=$(cat "$f"); names=(running locked checkpointed failed)
if [ "$op" = state ]; then echo "\${names[$st]}"; exit 0; fi
echo "$action $pid $timeout" >>"\${FAKE_CUDA_LOG:-/dev/null}"
case ",\${FAKE_CUDA_FAIL:-}," in *",$action="*) v=",\${FAKE_CUDA_FAIL},"; v=\${v#*,$action=}; echo "Could not $action process $pid: \${v%%,*}" >&2; exit 1;; esac
case "$action" in lock) from=0; to=1;; checkpoint) from=1; to=2;; restore) from=2; to=1;; unlock) from=1; to=0;; esac
[ "$st" = "$from" ] || { echo "Could not $action process $pid: CUDA_ERROR_ILLEGAL_STATE" >&2; exit 1; }
echo "$to" >"$f"
`,
  );
  chmodSync(fakeTool, 0o755);
});

afterAll(() => {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!cc && !process.env.CI)('the real helper without an NVIDIA driver', () => {
  const libcudaHere = spawnSync('sh', ['-c', 'ldconfig -p 2>/dev/null | grep -q "libcuda.so.1 "']).status === 0;

  it.skipIf(libcudaHere)('exits with the "no driver" code and one JSON line', () => {
    const r = spawnSync(helper, ['lock', '12345', '--timeout-ms', '1000'], { encoding: 'utf8' });
    expect(r.status).toBe(HelperExit.NO_DRIVER);
    const j = JSON.parse(r.stdout.trim());
    expect(j).toMatchObject({ op: 'lock', pid: 12345, ok: false, state: null, exit: 3 });
    expect(j.error).toMatch(/no NVIDIA driver: cannot load libcuda\.so\.1/);
  });

  it('rejects bad usage with its own code', () => {
    for (const args of [[], ['lock'], ['lock', 'abc'], ['frobnicate', '1'], ['lock', '1', '--timeout-ms', '-5'], ['state', '1', '--bogus']]) {
      const r = spawnSync(helper, args, { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(HelperExit.USAGE);
      expect(JSON.parse(r.stdout.trim()).error).toMatch(/usage: cuda-checkpoint-helper/);
    }
  });

  it('the hook reports ENGINE_UNAVAILABLE and leaves the task untouched and running', async () => {
    const pid = startTask();
    const env = { ...process.env, SPOTWATCH_CUDA_LIBRARY: '/nonexistent/libcuda.so.1' };
    const hook = hookWith(env);
    expect(await hook.availability()).toMatchObject({ available: false, reason: expect.stringMatching(/no NVIDIA driver/) });
    const e = await rejection(hook.beforeCheckpoint(ctx(pid)));
    expect(e.engineCode).toBe('ENGINE_UNAVAILABLE');
    expect(e.engineStatus).toBe('fatal');
    expect(e.taskState).toBe('running');
    expect(e.message).toMatch(/nothing was touched/);
    expect(e.calls.map((c) => c.exit)).toEqual([HelperExit.NO_DRIVER]);
    expect(hookFailure(e, Date.now())).toMatchObject({ status: 'fatal', code: 'ENGINE_UNAVAILABLE', taskState: 'running' });
    expect(await taskState(pid)).toBe('running');
  });

  it('a driver without the checkpoint API, or without a device, is ENGINE_UNAVAILABLE too', async () => {
    const pid = startTask();
    const old = driver({}, oldLib);
    old.set(pid, 'running');
    const e1 = await rejection(hookWith(old.env).beforeCheckpoint(ctx(pid)));
    expect(e1.engineCode).toBe('ENGINE_UNAVAILABLE');
    expect(e1.calls[0]?.exit).toBe(HelperExit.DRIVER_TOO_OLD);
    expect(e1.message).toMatch(/driver too old: .* has no cuCheckpointProcessGetState .*570/);

    const nodev = driver({ FAKE_CUDA_INIT_FAIL: '100' });
    nodev.set(pid, 'running');
    const e2 = await rejection(hookWith(nodev.env).beforeCheckpoint(ctx(pid)));
    expect(e2.engineCode).toBe('ENGINE_UNAVAILABLE');
    expect(e2.calls[0]).toMatchObject({ exit: HelperExit.INIT_FAILED, code: 100 });
    expect(e2.message).toMatch(/cuInit failed: CUDA_ERROR_NO_DEVICE/);
    expect(old.get(pid)).toBe(STATE.running);
  });

  it('a helper that is missing altogether is ENGINE_UNAVAILABLE', async () => {
    const pid = startTask();
    const hook = new CudaCheckpointHook({ backend: new HelperBackend(join(work, 'no-such-helper')), gpuPids: async (p) => [...p], gpuMemory: async () => new Map() });
    const e = await rejection(hook.beforeCheckpoint(ctx(pid)));
    expect(e.engineCode).toBe('ENGINE_UNAVAILABLE');
    expect(e.message).toMatch(/cannot run .*no-such-helper/);
  });
});

describe.skipIf(!cc && !process.env.CI)('the state machine against a driver double', () => {
  it('checkpoints (running → locked → checkpointed), and after a restore brings the task back (→ locked → running)', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const hook = hookWith(d.env, { lockTimeoutMs: 7000 });
    const c = ctx(pid);
    await hook.beforeCheckpoint(c);
    expect(d.get(pid)).toBe(STATE.checkpointed);
    expect(d.ops()).toEqual(['state', 'lock', 'state', 'checkpoint', 'state']);
    expect(d.calls()[1]).toBe(`lock ${pid} 7000`);
    const t = hook.timings(c.migrationId);
    expect(t.cudaLock).toBeGreaterThan(0);
    expect(t.cudaCheckpoint).toBeGreaterThan(0);

    await hook.afterCheckpoint({ ...c, ok: true, taskState: 'gone' });
    expect(d.get(pid)).toBe(STATE.checkpointed); // the image holds it now: nothing to undo

    await hook.afterRestore({ ...c, migrationId: 'target-side' });
    expect(d.get(pid)).toBe(STATE.running);
    expect(d.ops().slice(5)).toEqual(['state', 'restore', 'state', 'unlock', 'state']);
  });

  it('a failed dump (the task still runs on the source) gets its GPU back: restore + unlock', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const hook = hookWith(d.env);
    const c = ctx(pid);
    await hook.beforeCheckpoint(c);
    await hook.afterCheckpoint({ ...c, ok: false, taskState: 'running' });
    expect(d.get(pid)).toBe(STATE.running);
    expect(d.ops().slice(5)).toEqual(['state', 'restore', 'state', 'state', 'unlock', 'state', 'state']);
  });

  it('a lock that times out fails HOOK_FAILED (retryable) and leaves the task running', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'lock=909' });
    d.set(pid, 'running');
    const e = await rejection(hookWith(d.env, { lockTimeoutMs: 250 }).beforeCheckpoint(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'HOOK_FAILED', engineStatus: 'retryable', step: 'lock', taskState: 'running', rolledBack: true });
    expect(e.message).toMatch(/CUDA_ERROR_TIMEOUT.*did not come within 250 ms.*rolled back/);
    expect(e.cudaStates).toEqual({ [pid]: 'running' });
    expect(d.get(pid)).toBe(STATE.running);
  });

  it('a checkpoint that fails is rolled back: the locked task is unlocked and runs on', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'checkpoint=999' });
    d.set(pid, 'running');
    const e = await rejection(hookWith(d.env).beforeCheckpoint(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'HOOK_FAILED', step: 'checkpoint', taskState: 'running', rolledBack: true });
    expect(e.message).toMatch(/CUDA_ERROR_UNKNOWN/);
    expect(d.ops()).toContain('unlock');
    expect(d.get(pid)).toBe(STATE.running);
    expect(hookFailure(e, Date.now())).toMatchObject({ status: 'retryable', code: 'HOOK_FAILED', taskState: 'running' });
  });

  it('a process the driver cannot checkpoint (UVM, IPC: NOT_SUPPORTED) is TASK_UNSUPPORTED, rolled back', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'checkpoint=801' });
    d.set(pid, 'running');
    const e = await rejection(hookWith(d.env).beforeCheckpoint(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'TASK_UNSUPPORTED', engineStatus: 'fatal', rolledBack: true });
    expect(d.get(pid)).toBe(STATE.running);
  });

  it('a checkpoint that leaves the process FAILED cannot be rolled back, and says so', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'checkpoint=999/3' });
    d.set(pid, 'running');
    const e = await rejection(hookWith(d.env).beforeCheckpoint(ctx(pid)));
    expect(e.rolledBack).toBe(false);
    expect(e.cudaStates).toEqual({ [pid]: 'failed' });
    expect(e.message).toMatch(/ROLLBACK FAILED .*failed.*cannot use its GPU/);
    expect(e.taskState).toBe('running'); // the process lives, its GPU state does not
  });

  it('a process that is not running (locked by someone else) is refused without touching it', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'locked');
    const e = await rejection(hookWith(d.env).beforeCheckpoint(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'HOOK_FAILED', step: 'inspect' });
    expect(e.message).toMatch(/CUDA state locked, not running.*nothing was touched/);
    expect(d.ops()).toEqual(['state']);
    expect(d.get(pid)).toBe(STATE.locked);
  });

  it('a deadline too close for the GPU memory is refused before anything is touched', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const hook = hookWith(d.env, { gpuMemory: async () => new Map([[pid, 20e9]]), checkpointBytesPerSec: 1e9 });
    const e = await rejection(hook.beforeCheckpoint(ctx(pid, { deadline: Date.now() + 2000 })));
    expect(e).toMatchObject({ engineCode: 'DEADLINE_TOO_CLOSE', engineStatus: 'fatal', step: 'deadline', taskState: 'running' });
    expect(e.message).toMatch(/18\.6 GiB of GPU memory needs ≈20000 ms/);
    expect(d.ops()).toEqual([]);
  });

  it('bounds the driver lock timeout by the time left', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    await hookWith(d.env, { lockTimeoutMs: 600_000 }).beforeCheckpoint(ctx(pid, { deadline: Date.now() + 3000 }));
    const lock = d.calls().find((l) => l.startsWith('lock')) as string;
    const ms = Number(lock.split(' ')[2]);
    expect(ms).toBeGreaterThan(1000);
    expect(ms).toBeLessThanOrEqual(3000);
  });

  it('an aborted call touches nothing', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const ac = new AbortController();
    ac.abort();
    const e = await rejection(hookWith(d.env).beforeCheckpoint(ctx(pid, { signal: ac.signal })));
    expect(e.engineCode).toBe('ABORTED');
    expect(d.ops()).toEqual([]);
  });

  it('a CUDA restore that fails on the target is HOOK_FAILED with the states it found', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'restore=999' });
    d.set(pid, 'checkpointed');
    const e = await rejection(hookWith(d.env).afterRestore(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'HOOK_FAILED', step: 'restore' });
    expect(e.message).toMatch(/on the target failed.*CUDA_ERROR_UNKNOWN.*checkpointed/);
  });

  it('after a restore, processes without CUDA state are left alone', async () => {
    const pid = startTask();
    const d = driver(); // no state file: the double answers CUDA_ERROR_NOT_INITIALIZED, as the real driver does
    await hookWith(d.env).afterRestore(ctx(pid));
    expect(d.ops()).toEqual(['state']);
  });
});

describe.skipIf(!cc && !process.env.CI)("NVIDIA's cuda-checkpoint as the backend (test double of the tool)", () => {
  it('runs the same state machine through --action / --get-state', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const hook = hookWith(d.env, { backend: new NvidiaToolBackend(fakeTool, d.env), lockTimeoutMs: 4000 });
    expect(await hook.availability()).toMatchObject({ available: true, backend: `nvidia-tool ${fakeTool}` });
    const c = ctx(pid);
    await hook.beforeCheckpoint(c);
    expect(d.get(pid)).toBe(STATE.checkpointed);
    expect(d.calls()).toEqual([`lock ${pid} 4000`, `checkpoint ${pid}`]);
    await hook.afterRestore(c);
    expect(d.get(pid)).toBe(STATE.running);
  });

  it("classifies the tool's failure messages (a lock timeout is retryable, rolled back)", async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'lock=CUDA_ERROR_TIMEOUT' });
    d.set(pid, 'running');
    const hook = hookWith(d.env, { backend: new NvidiaToolBackend(fakeTool, d.env) });
    const e = await rejection(hook.beforeCheckpoint(ctx(pid)));
    expect(e).toMatchObject({ engineCode: 'HOOK_FAILED', engineStatus: 'retryable', step: 'lock', rolledBack: true });
    expect(e.calls.find((x) => x.op === 'lock')?.code).toBe(909);
    expect(d.get(pid)).toBe(STATE.running);
  });
});

const criu = await locateCriu();
const criuReady = criu.ok && process.getuid?.() === 0;

describe.skipIf((!cc || !criuReady) && !process.env.CI)('inside the real CriuEngine, around a real dump and restore', () => {
  beforeAll(() => {
    if (!criuReady) throw new Error(`CRIU is needed: ${criu.ok ? 'not root' : criu.reason}`);
  });

  it('checkpoints with the CUDA state checkpointed, restores, and gives the restored task its GPU back', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const hook = hookWith(d.env);
    const engine = new CriuEngine({ hooks: [hook], logLevel: 2 });
    const dir = mkdtempSync(join(work, 'img-'));
    const ck = await engine.checkpoint({ task: { kind: 'process', pid }, migrationId: 'gpu-dir', destination: { kind: 'directory', path: join(dir, 'i') }, deadline: Date.now() + 30_000 });
    expect(ck.status, ck.status === 'ok' ? '' : ck.message).toBe('ok');
    expect(d.get(pid)).toBe(STATE.checkpointed);
    expect(await taskState(pid)).toBe('gone');
    const rs = await engine.restore({ migrationId: 'gpu-dir', source: { kind: 'directory', path: join(dir, 'i') }, deadline: Date.now() + 30_000 });
    expect(rs.status, rs.status === 'ok' ? '' : rs.message).toBe('ok');
    if (rs.status !== 'ok' || rs.value.task.kind !== 'process') return;
    children.push(rs.value.task.pid);
    expect(rs.value.task.pid).toBe(pid);
    expect(d.get(pid)).toBe(STATE.running);
    expect(d.ops()).toEqual(['state', 'lock', 'state', 'checkpoint', 'state', 'state', 'restore', 'state', 'unlock', 'state']);
  });

  it('a CUDA checkpoint failure fails the engine call with HOOK_FAILED and the task runs on, GPU state intact', async () => {
    const pid = startTask();
    const d = driver({ FAKE_CUDA_FAIL: 'checkpoint=999' });
    d.set(pid, 'running');
    const engine = new CriuEngine({ hooks: [hookWith(d.env)], logLevel: 2 });
    const r = await engine.checkpoint({ task: { kind: 'process', pid }, migrationId: 'gpu-fail', destination: { kind: 'directory', path: join(mkdtempSync(join(work, 'img-')), 'i') }, deadline: Date.now() + 30_000 });
    expect(r.status).toBe('retryable');
    if (r.status === 'ok') return;
    expect(r.code).toBe('HOOK_FAILED');
    expect(r.taskState).toBe('running');
    expect(r.message).toMatch(/cuda checkpoint failed.*rolled back/);
    expect(d.get(pid)).toBe(STATE.running);
    expect(await taskState(pid)).toBe('running');
  });

  it('a dump that fails after the CUDA checkpoint gives the task its GPU back on the source', async () => {
    const pid = startTask();
    const d = driver();
    d.set(pid, 'running');
    const engine = new CriuEngine({ hooks: [hookWith(d.env)], logLevel: 2, extraDumpArgs: ['--no-such-criu-option'] });
    const r = await engine.checkpoint({ task: { kind: 'process', pid }, migrationId: 'gpu-dumpfail', destination: { kind: 'directory', path: join(mkdtempSync(join(work, 'img-')), 'i') }, deadline: Date.now() + 30_000 });
    expect(r.status).not.toBe('ok');
    if (r.status === 'ok') return;
    expect(r.taskState).toBe('running');
    expect(d.get(pid)).toBe(STATE.running);
    expect(d.ops()).toEqual(['state', 'lock', 'state', 'checkpoint', 'state', 'state', 'restore', 'state', 'state', 'unlock', 'state', 'state']);
  });
});
