import { Readable, Writable } from 'node:stream';
import { expect } from 'vitest';
import type { CliIo } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { parseCommand } from '../../src/cli/parse-command.js';
import { noticeSchema, type Notice } from '../../src/notice.js';

/** A CLI command (`main`, or one command such as `parseCommand`) run in this process. */
export type CliCommand = (argv: string[], io: CliIo) => Promise<number>;

export interface InProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

function collector(chunks: string[]): Writable {
  return new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
}

/** Runs `command` in this process with `stdin` (nothing by default) and `env`, collecting its output. */
export async function runInProcess(command: CliCommand, argv: string[], options: { stdin?: string | Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<InProcessResult> {
  const out: string[] = [];
  const err: string[] = [];
  const stdin = options.stdin ?? '';
  const io: CliIo = { stdin: Readable.from(stdin.length === 0 ? [] : [stdin]), stdout: collector(out), stderr: collector(err), env: options.env ?? {} };
  const code = await command(argv, io);
  return { code, stdout: out.join(''), stderr: err.join('') };
}

export interface ParseResult extends InProcessResult {
  /** Every stdout line, validated as a Notice. */
  notices: Notice[];
}

export interface ParseOptions {
  /** `null`: no --instance-id flag at all. */
  instanceId?: string | null;
  now?: string;
}

/**
 * `spotwatch parse --source S --now T [--instance-id ID]` with one payload on stdin, in this process, with one
 * cloud's defaults for `now` and the instance id. `viaMain`: through the CLI entry (`main(['parse', …])`)
 * rather than `parseCommand` itself. The checks are those of the CLI contract: one Notice per line and exit 0,
 * or exit 2 and one stderr line naming what is wrong.
 */
export function parseCli(defaults: { now: string; instanceId: string; viaMain?: boolean }) {
  async function parse(source: string, payload: string | Buffer, options: ParseOptions = {}): Promise<ParseResult> {
    const instanceId = options.instanceId === undefined ? defaults.instanceId : options.instanceId;
    const argv = ['--source', source, '--now', options.now ?? defaults.now];
    if (instanceId !== null) argv.push('--instance-id', instanceId);
    const result = defaults.viaMain ? await runInProcess(main, ['parse', ...argv], { stdin: payload }) : await runInProcess(parseCommand, argv, { stdin: payload });
    const notices = result.stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => noticeSchema.parse(JSON.parse(line)));
    return { ...result, notices };
  }

  /** Parses a payload that must be accepted: exit 0, nothing on stderr; gives its notices. */
  async function ok(source: string, payload: string, options: ParseOptions = {}): Promise<Notice[]> {
    const result = await parse(source, payload, options);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    return result.notices;
  }

  /** Parses a payload that must give exactly one notice. */
  async function one(source: string, payload: string, options: ParseOptions = {}): Promise<Notice> {
    const notices = await ok(source, payload, options);
    expect(notices).toHaveLength(1);
    return notices[0]!;
  }

  /** Parses a payload that carries no notice: exit 0, nothing printed. */
  async function none(source: string, payload: string, options: ParseOptions = {}): Promise<void> {
    const result = await parse(source, payload, options);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('');
  }

  /** Parses a malformed payload: exit 2, nothing on stdout, one stderr line `malformed <source> payload…` containing `expected`. */
  async function malformed(source: string, payload: string, expected: string, options: ParseOptions = {}): Promise<void> {
    const result = await parse(source, payload, options);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    const lines = result.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`malformed ${source} payload`);
    expect(lines[0]).toContain(expected);
  }

  return { parse, ok, one, none, malformed };
}

export const DELETE = Symbol('delete');

/** A copy of `json` with the value at `path` replaced (or deleted, with `DELETE`). */
export function edit(json: unknown, path: (string | number)[], value: unknown): unknown {
  const copy = structuredClone(json) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (value === DELETE) delete node[last];
  else node[last] = value;
  return copy;
}
