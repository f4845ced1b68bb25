/**
 * The CUDA hook's pure parts: command lines for spotwatch's helper and NVIDIA's cuda-checkpoint, parsing of their
 * output (lines captured from the real helper on an H100 with driver 580.159.04), failure classification and the
 * engine codes it maps to, GPU task detection and nvidia-smi parsing.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CudaHookError,
  HelperExit,
  classifyFailure,
  codeFor,
  cuResultFromText,
  gpuProcesses,
  gpuTargetFits,
  helperArgs,
  hookFailure,
  isNvidiaDevice,
  nvidiaToolArgs,
  openNvidiaDevices,
  parseComputeApps,
  parseGpuQuery,
  parseHelperOutput,
  parseNvidiaToolState,
} from '../../src/engines/cuda/index.js';

describe('helper command lines', () => {
  it('puts the op and pid first and the lock timeout only on lock', () => {
    expect(helperArgs('state', 42)).toEqual(['state', '42']);
    expect(helperArgs('lock', 42, 10_000)).toEqual(['lock', '42', '--timeout-ms', '10000']);
    expect(helperArgs('checkpoint', 42, 10_000)).toEqual(['checkpoint', '42']);
    expect(helperArgs('probe')).toEqual(['probe']);
  });

  it('never asks the driver for "no timeout" when a bound was given, and rejects nonsense', () => {
    expect(helperArgs('lock', 1, 0.4)).toEqual(['lock', '1', '--timeout-ms', '1']);
    expect(() => helperArgs('lock', 0)).toThrow(RangeError);
    expect(() => helperArgs('lock', 1.5)).toThrow(RangeError);
    expect(() => helperArgs('lock', 1, -1)).toThrow(RangeError);
  });

  it("builds NVIDIA's cuda-checkpoint command lines (--get-state, --action … --timeout)", () => {
    expect(nvidiaToolArgs('state', 7)).toEqual(['--get-state', '--pid', '7']);
    expect(nvidiaToolArgs('lock', 7, 5000)).toEqual(['--action', 'lock', '--pid', '7', '--timeout', '5000']);
    expect(nvidiaToolArgs('restore', 7, 5000)).toEqual(['--action', 'restore', '--pid', '7']);
  });
});

describe('helper output', () => {
  it('parses the probe line of a real H100 (driver 580, CUDA 13.0)', () => {
    const r = parseHelperOutput('{"op":"probe","pid":null,"ok":true,"state":null,"error":null,"code":0,"ms":0.000,"exit":0,"driverVersion":13000}\n');
    expect(r).toEqual({ op: 'probe', pid: null, ok: true, state: null, error: null, code: 0, ms: 0, exit: 0, driverVersion: 13000 });
  });

  it('parses the real answer for a process without CUDA (CUDA_ERROR_NOT_INITIALIZED) and classifies it', () => {
    const r = parseHelperOutput(
      '{"op":"state","pid":1,"ok":false,"state":null,"error":"CUDA_ERROR_NOT_INITIALIZED: initialization error","code":3,"ms":0.190,"exit":5}',
    );
    expect(r?.exit).toBe(HelperExit.CUDA_ERROR);
    expect(r?.code).toBe(3);
    expect(classifyFailure(r!)).toBe('not-cuda');
  });

  it('parses the no-driver line this CPU machine produces, and maps it to ENGINE_UNAVAILABLE', () => {
    const r = parseHelperOutput(
      '{"op":"lock","pid":123,"ok":false,"state":null,"error":"no NVIDIA driver: cannot load libcuda.so.1 (libcuda.so.1: cannot open shared object file: No such file or directory)","code":0,"ms":0.000,"exit":3}',
    )!;
    expect(classifyFailure(r)).toBe('unavailable');
    expect(codeFor(classifyFailure(r))).toEqual({ code: 'ENGINE_UNAVAILABLE', status: 'fatal' });
  });

  it('reads the last line only, maps unknown states to "unknown", and refuses what is not its shape', () => {
    expect(parseHelperOutput('noise\n{"op":"lock","pid":5,"ok":true,"state":"locked","error":null,"code":0,"ms":3.5,"exit":0}\n')?.state).toBe('locked');
    expect(parseHelperOutput('{"op":"state","pid":5,"ok":true,"state":"weird","error":null,"code":0,"ms":1,"exit":0}')?.state).toBe('unknown');
    expect(parseHelperOutput('')).toBeUndefined();
    expect(parseHelperOutput('Segmentation fault')).toBeUndefined();
    expect(parseHelperOutput('{"hello":1}')).toBeUndefined();
  });

  it("parses cuda-checkpoint's state word and finds CUresults in its messages", () => {
    expect(parseNvidiaToolState('checkpointed\n')).toBe('checkpointed');
    expect(parseNvidiaToolState('running')).toBe('running');
    expect(parseNvidiaToolState('')).toBeUndefined();
    expect(cuResultFromText('Could not lock process 123: CUDA_ERROR_TIMEOUT')).toBe(909);
    expect(cuResultFromText('checkpoint failed with error 801')).toBe(801);
    expect(cuResultFromText('something (401)')).toBe(401);
    expect(cuResultFromText('no idea')).toBe(0);
  });
});

describe('failure classification and engine codes', () => {
  const r = (exit: number, code = 0) => ({ op: 'lock' as const, pid: 1, ok: false, state: null, error: 'x', code, ms: 0, exit });
  it.each([
    [r(HelperExit.NO_DRIVER), 'unavailable', 'ENGINE_UNAVAILABLE', 'fatal'],
    [r(HelperExit.DRIVER_TOO_OLD), 'unavailable', 'ENGINE_UNAVAILABLE', 'fatal'],
    [r(HelperExit.INIT_FAILED, 100), 'unavailable', 'ENGINE_UNAVAILABLE', 'fatal'],
    [r(HelperExit.USAGE), 'internal', 'INTERNAL', 'fatal'],
    [r(HelperExit.CUDA_ERROR, 801), 'unsupported', 'TASK_UNSUPPORTED', 'fatal'],
    [r(HelperExit.CUDA_ERROR, 909), 'timeout', 'HOOK_FAILED', 'retryable'],
    [r(HelperExit.CUDA_ERROR, 401), 'illegal-state', 'HOOK_FAILED', 'retryable'],
    [r(HelperExit.CUDA_ERROR, 999), 'cuda', 'HOOK_FAILED', 'retryable'],
  ])('%j → %s → %s/%s', (res, kind, code, status) => {
    const k = classifyFailure(res);
    expect(k).toBe(kind);
    expect(codeFor(k)).toEqual({ code, status });
  });

  it('hookFailure keeps the CUDA error\'s code, status and verified task state; other errors become HOOK_FAILED', () => {
    const e = new CudaHookError('cuda lock failed', 'TASK_UNSUPPORTED', 'fatal', 'lock', 'running', { 5: 'running' }, [], true);
    const f = hookFailure(e, Date.now() - 5);
    expect(f).toMatchObject({ status: 'fatal', code: 'TASK_UNSUPPORTED', taskState: 'running', message: 'cuda lock failed' });
    expect(f.cause).toBe(e);
    expect(hookFailure(new Error('boom'), Date.now())).toMatchObject({ status: 'retryable', code: 'HOOK_FAILED', message: 'cuda hook failed: boom' });
  });
});

describe('GPU task detection', () => {
  const roots: string[] = [];
  afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

  it('recognises NVIDIA device nodes and nothing else', () => {
    for (const p of ['/dev/nvidia0', '/dev/nvidia7', '/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia-modeset', '/dev/nvidia-caps/nvidia-cap1']) {
      expect(isNvidiaDevice(p), p).toBe(true);
    }
    for (const p of ['/dev/nvme0n1', '/dev/null', '/tmp/dev/nvidia0', '/dev/nvidiafoo', 'socket:[123]']) expect(isNvidiaDevice(p), p).toBe(false);
  });

  it('reads open descriptors from a /proc tree: only processes holding /dev/nvidia* are GPU processes', async () => {
    const root = mkdtempSync(join(tmpdir(), 'spotwatch-proc-'));
    roots.push(root);
    const fds = (pid: number, targets: string[]) => {
      mkdirSync(join(root, String(pid), 'fd'), { recursive: true });
      targets.forEach((t, i) => symlinkSync(t, join(root, String(pid), 'fd', String(i))));
    };
    fds(100, ['/dev/null', '/tmp/x.log', '/dev/nvidiactl', '/dev/nvidia0', '/dev/nvidia0', '/dev/nvidia-uvm']);
    fds(101, ['/dev/null', 'socket:[42]']);
    expect(await openNvidiaDevices(100, root)).toEqual(['/dev/nvidia-uvm', '/dev/nvidia0', '/dev/nvidiactl']);
    expect(await openNvidiaDevices(101, root)).toEqual([]);
    expect(await openNvidiaDevices(102, root)).toEqual([]);
    expect(await gpuProcesses([101, 100, 102], root)).toEqual([100]);
  });

  it('this test process holds no NVIDIA device', async () => {
    expect(await openNvidiaDevices(process.pid)).toEqual([]);
  });
});

describe('nvidia-smi parsing', () => {
  it('sums per-process GPU memory over GPUs and keeps unknown amounts at 0', () => {
    const text = ['12345, 27728', '12345, 1024', '222, [N/A]', '333, [Not Supported]', '', 'garbage line'].join('\n');
    const m = parseComputeApps(text);
    expect(m.get(12345)).toBe((27728 + 1024) * 1048576);
    expect(m.get(222)).toBe(0);
    expect(m.get(333)).toBe(0);
    expect(m.size).toBe(3);
    expect(parseComputeApps('No running processes found\n').size).toBe(0);
  });

  it('parses the node GPU inventory and checks a target fits (same model, enough free memory)', () => {
    const gpus = parseGpuQuery('0, NVIDIA H100 80GB HBM3, GPU-4f1c, 81559, 80000, 580.159.04\n1, NVIDIA H100 80GB HBM3, GPU-99aa, 81559, 1000, 580.159.04\n');
    expect(gpus).toHaveLength(2);
    expect(gpus[0]).toEqual({ index: 0, name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-4f1c', memoryTotalBytes: 81559 * 1048576, memoryFreeBytes: 80000 * 1048576, driverVersion: '580.159.04' });
    expect(gpuTargetFits('NVIDIA H100 80GB HBM3', 27 * 2 ** 30, gpus)).toBe(true);
    expect(gpuTargetFits('NVIDIA H100 80GB HBM3', 79 * 2 ** 30, gpus)).toBe(false);
    expect(gpuTargetFits('NVIDIA H200', 1, gpus)).toBe(false);
  });
});
