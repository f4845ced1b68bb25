/**
 * Running one `criu` command: in its own session (so signals aimed at the agent's process group never reach a
 * CRIU that is in the middle of a dump), with optional extra socketpair fds (fd 3: the page-server socket),
 * killed when the deadline passes or the caller aborts, with a bounded tail of its stdout and stderr.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import type { CriuBinary } from './criu-binary.js';
import { criuCommand } from './criu-binary.js';
import { holderCommandLine } from './exec-holder.js';

const OUTPUT_TAIL_BYTES = 64 * 1024;

export interface CriuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  /** Why spotwatch killed it, if it did. */
  killedFor?: 'deadline' | 'abort';
  /** The process could not be started at all. */
  spawnError?: Error;
}

export interface CriuRun {
  child: ChildProcess;
  /** CRIU's end of the socketpair at fd 3, when `pageSocket` was asked for. */
  pageSocket?: Duplex;
  /** Our end of the status pipe (`statusPipe`: the next fd after 2 or after the page socket). */
  status?: Duplex;
  done: Promise<CriuExit>;
  kill(reason: 'deadline' | 'abort'): void;
}

export interface StartCriuOptions {
  /** Give the child a socketpair at fd 3 (for `--ps-socket 3`). */
  pageSocket?: boolean;
  /** Give the child one more fd for `--status-fd` (3, or 4 after a page socket); see {@link statusFdOf}. */
  statusPipe?: boolean;
  /**
   * Give the child this connected socket as its stdin (for `--ps-socket 0`): libuv makes a child's fds 0–2
   * blocking, which CRIU needs. The caller closes its own descriptor right after the spawn (page-channel.ts).
   */
  stdinSocket?: Socket;
  deadline: number;
  signal?: AbortSignal;
  cwd?: string;
  /** Extra environment for CRIU (on top of this process's). */
  env?: Record<string, string>;
}

function tail(s: string): string {
  return s.length > OUTPUT_TAIL_BYTES ? s.slice(-OUTPUT_TAIL_BYTES) : s;
}

/** The child's descriptors: stdin (a socket or nothing), stdout, stderr, then the page socket and status pipe. */
function stdioFor(opts: Pick<StartCriuOptions, 'stdinSocket' | 'pageSocket' | 'statusPipe'>): ('ignore' | 'pipe' | Socket)[] {
  const stdio: ('ignore' | 'pipe' | Socket)[] = [opts.stdinSocket ?? 'ignore', 'pipe', 'pipe'];
  if (opts.pageSocket) stdio.push('pipe');
  if (opts.statusPipe) stdio.push('pipe');
  return stdio;
}

function commandFor(binary: Pick<CriuBinary, 'path' | 'exec'> | string, args: readonly string[]): { file: string; args: string[] } {
  return criuCommand(typeof binary === 'string' ? { path: binary } : binary, args);
}

function spawnOptions(opts: Pick<StartCriuOptions, 'cwd' | 'env'>, stdio: ('ignore' | 'pipe' | Socket)[]) {
  return { stdio, detached: true, cwd: opts.cwd, ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) };
}

/** Starts `criu ARGS…`: `binary` is a located CRIU (run directly where it can be) or a path. */
export function startCriu(binary: Pick<CriuBinary, 'path' | 'exec'> | string, args: readonly string[], opts: StartCriuOptions): CriuRun {
  const started = Date.now();
  const command = commandFor(binary, args);
  const child = spawn(command.file, command.args, spawnOptions(opts, stdioFor(opts)));
  return watchCriu(child, opts, started);
}

/** A CRIU whose process (an exec holder) is started, waiting for its command line: {@link prepareCriu}. */
export interface PreparedCriu {
  /** Runs `criu ARGS…` in the held process (same descriptors as asked for at {@link prepareCriu}). */
  start(args: readonly string[], opts: Pick<StartCriuOptions, 'deadline' | 'signal'>): CriuRun;
  /** Not needed after all: the held process exits (a no-op once started). */
  cancel(): void;
}

/**
 * Starts the exec holder `holder` (exec-holder.ts) now, with the descriptors `opts` asks for, so that
 * {@link PreparedCriu.start} later costs no fork of this process. The caller closes its own copy of
 * `opts.stdinSocket` right after this call, as after {@link startCriu}.
 */
export function prepareCriu(binary: Pick<CriuBinary, 'path' | 'exec'> | string, holder: string, opts: Omit<StartCriuOptions, 'deadline' | 'signal'>): PreparedCriu {
  const stdio = [...stdioFor(opts), 'pipe' as const];
  const controlFd = stdio.length - 1;
  const child = spawn(holder, [String(controlFd)], spawnOptions(opts, stdio));
  const control = child.stdio[controlFd] as Writable | null;
  control?.on('error', () => undefined);
  // A holder that could not start, or ended before its command line came (killed), is remembered: its `start`
  // then reports that instead of waiting for an exit that already happened.
  let gone: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
  const onError = (error: Error): void => void (gone ??= { code: null, signal: null, error });
  const onExit = (code: number | null, signal: NodeJS.Signals | null): void => void (gone ??= { code, signal });
  child.on('error', onError);
  child.once('exit', onExit);
  let used = false;
  return {
    start(args, o) {
      used = true;
      const started = Date.now();
      if (gone) {
        const exit: CriuExit = { code: gone.code, signal: gone.signal, stdout: '', stderr: '', durationMs: 0, spawnError: gone.error ?? new Error(`the exec holder ended before criu could run (${gone.signal ?? `exit ${gone.code}`})`) };
        return { child, done: Promise.resolve(exit), kill: () => undefined };
      }
      child.off('error', onError);
      child.off('exit', onExit);
      const run = watchCriu(child, { ...opts, ...o }, started);
      const command = commandFor(binary, args);
      control?.end(holderCommandLine(command.file, command.args));
      return run;
    },
    cancel() {
      if (used) return;
      used = true;
      control?.end();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Deadline, abort, output tails and the exit of a started CRIU (spawned directly or exec'd by its holder). */
function watchCriu(child: ChildProcess, opts: StartCriuOptions, started: number): CriuRun {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout = tail(stdout + d)));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = tail(stderr + d)));
  let killedFor: CriuExit['killedFor'];
  const kill = (reason: 'deadline' | 'abort'): void => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    killedFor ??= reason;
    child.kill('SIGKILL');
  };
  const timer = setTimeout(() => kill('deadline'), Math.max(0, opts.deadline - Date.now()));
  const onAbort = (): void => kill('abort');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) kill('abort');
  // 'close' would also wait for fd 3, which the relay may hold paused; wait for exit and for stdout/stderr only.
  const drained = (stream: NodeJS.ReadableStream | null): Promise<void> =>
    stream ? new Promise((r) => stream.once('close', () => r())) : Promise.resolve();
  const outputs = Promise.all([drained(child.stdout), drained(child.stderr)]);
  const done = new Promise<CriuExit>((resolve) => {
    let spawnError: Error | undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const settle = (): void => {
        const exit: CriuExit = { code, signal, stdout, stderr, durationMs: Date.now() - started };
        if (killedFor) exit.killedFor = killedFor;
        if (spawnError) exit.spawnError = spawnError;
        resolve(exit);
      };
      Promise.race([outputs, new Promise((r) => setTimeout(r, 500))]).then(settle, settle);
    };
    child.once('error', (err) => {
      spawnError = err;
      if (child.pid === undefined) finish(null, null);
    });
    child.once('exit', finish);
  });
  const run: CriuRun = { child, done, kill };
  const sock = child.stdio[3];
  if (opts.pageSocket && sock) run.pageSocket = sock as Duplex;
  const status = child.stdio[statusFdOf(opts)];
  if (opts.statusPipe && status) run.status = status as Duplex;
  return run;
}

/** The fd number a CRIU started with these options has its status pipe at (for `--status-fd`). */
export function statusFdOf(opts: Pick<StartCriuOptions, 'pageSocket'>): number {
  return opts.pageSocket ? 4 : 3;
}
