/**
 * Making sense of CRIU's own output: its log (`-o dump.log -v4`), its stderr, and its stats images, turned into
 * the engine's stable failure codes and a message a person can act on.
 */
import type { EngineErrorCode, EngineFailure } from '../checkpoint-engine.js';

export type CriuAction = 'dump' | 'restore' | 'page-server' | 'check';

export interface CriuLogEntry {
  level: 'error' | 'warn';
  /** Source location CRIU printed, e.g. `criu/sk-inet.c:200`. */
  where?: string;
  message: string;
}

/**
 * Errors CRIU logs that are not the reason anything failed: the RLIMIT_NOFILE complaint when it runs in a
 * container, and the generic summaries it prints after the real error.
 */
const NOISE: readonly RegExp[] = [
  /rlimit: Can't setup RLIMIT_NOFILE/,
  /^(Dumping|Restoring) FAILED\.?$/,
  /^Dump files \(pid: \d+\) failed/,
  /^exited, status=\d+$/,
  /^Pre-dumping FAILED/,
];

/** Error and warning lines of a CRIU log, in order (`(00.123) Error (file.c:12): message`). */
export function parseCriuLog(text: string): CriuLogEntry[] {
  const out: CriuLogEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(?:\(\s*[\d.]+\)\s+)?(?:\d+:\s+)?(Error|Warn)\s*(?:\(([^)]*)\))?:\s?(.*)$/.exec(line.trim());
    if (!m) continue;
    const entry: CriuLogEntry = { level: m[1] === 'Error' ? 'error' : 'warn', message: (m[3] ?? '').trim() };
    if (m[2]) entry.where = m[2];
    out.push(entry);
  }
  return out;
}

/** The error lines that carry information (noise removed), in order. */
export function meaningfulErrors(entries: readonly CriuLogEntry[]): CriuLogEntry[] {
  return entries.filter((e) => e.level === 'error' && !NOISE.some((n) => n.test(e.message)));
}

interface Rule {
  actions: readonly CriuAction[];
  test: RegExp;
  code: EngineErrorCode;
  status: EngineFailure['status'];
  hint?: string;
}

/** First matching rule wins; rules are tried against every meaningful error line, then stderr. */
const RULES: readonly Rule[] = [
  { actions: ['dump', 'restore', 'page-server', 'check'], test: /unrecognized option|invalid option|unknown option|Unknown command/i, code: 'INVALID_REQUEST', status: 'fatal', hint: 'this CRIU does not accept the options spotwatch passed; check the engine options and the CRIU version' },
  { actions: ['dump'], test: /Can't get 1:(16|34) opt: Operation not supported/, code: 'ENGINE_UNAVAILABLE', status: 'fatal', hint: 'CRIU older than 4.2 cannot dump TCP/UDP sockets on Linux 6.16+; run scripts/install-criu.sh to get CRIU 4.2' },
  { actions: ['dump'], test: /Connected TCP socket|consider using --tcp-established/, code: 'TASK_UNSUPPORTED', status: 'fatal', hint: 'the task has established TCP connections; enable tcpEstablished only where its address moves with it, or close them first' },
  { actions: ['dump'], test: /Iptables configuration failed|nft(ables)?.*(fail|error)|network lock/i, code: 'CHECKPOINT_FAILED', status: 'fatal', hint: 'locking the network for --tcp-established failed; use networkLock "nftables" (no iptables binary needed)' },
  { actions: ['dump'], test: /(Unable to (interrupt|seize|detach)|Can't (seize|open)).*No such process|No such process.*seize|Can't read .*\/proc\/\d+|Failed to open \/proc\/\d+\/stat/, code: 'TASK_NOT_FOUND', status: 'fatal', hint: 'the task no longer exists' },
  { actions: ['dump', 'restore', 'page-server', 'check'], test: /ptrace.*(Operation not permitted|EPERM)|(seize|attach).*Operation not permitted|Permission denied.*ptrace|must be run by root|CAP_(SYS_ADMIN|CHECKPOINT_RESTORE)/i, code: 'PERMISSION_DENIED', status: 'fatal', hint: 'CRIU must run as root (or with CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE)' },
  { actions: ['dump'], test: /session leader|shell[- ]job|tty|pty|terminal/i, code: 'TASK_UNSUPPORTED', status: 'fatal', hint: 'the task is tied to a terminal or to a session outside its tree; start it with setsid and stdio on files, or use shellJob' },
  { actions: ['dump'], test: /External (socket|unix)|Can't dump half of stream unix|unix.*(external|peer.*outside)|Unix socket .* not supported/i, code: 'TASK_UNSUPPORTED', status: 'fatal', hint: 'the task holds a unix socket connected outside its tree; enable extUnixSk, or close it' },
  { actions: ['dump'], test: /io_uring|Can't dump .* (not supported|unsupported)|Unsupported (file|fd|socket|mapping)|Can't handle/i, code: 'TASK_UNSUPPORTED', status: 'fatal', hint: 'the task holds a resource CRIU cannot checkpoint' },
  { actions: ['dump'], test: /Timeout reached|Unable to freeze|Can't freeze|freezing.*fail/i, code: 'CHECKPOINT_FAILED', status: 'retryable', hint: 'the tree could not be frozen in time; retry' },
  { actions: ['dump', 'page-server'], test: /page.?server|ps socket|Can't (send|receive|read|write).*(socket|page)|Connection reset|Broken pipe|Short read/i, code: 'TRANSPORT_FAILED', status: 'retryable', hint: 'the page stream to the target broke; retry, maybe to another target' },
  { actions: ['dump', 'restore', 'page-server'], test: /No space left on device|ENOSPC/, code: 'CHECKPOINT_FAILED', status: 'retryable', hint: 'the image directory is full' },
  { actions: ['restore'], test: /Can't fork for \d+: File exists|pid .* (is )?(busy|in use)|set_tid.*File exists/i, code: 'RESTORE_CONFLICT', status: 'retryable', hint: 'a process with the same pid already runs on this node; restore on another node, or once it is gone' },
  { actions: ['restore'], test: /Address already in use/, code: 'RESTORE_CONFLICT', status: 'retryable', hint: 'an address the task listens on is taken on this node' },
  { actions: ['restore', 'page-server'], test: /Unexpected EOF|empty-image|magic|corrupt|Unable to open \S*\.img|Can't open image|inventory/i, code: 'IMAGE_INVALID', status: 'fatal', hint: 'the image is incomplete or not a CRIU image' },
  { actions: ['restore'], test: /has bad size|File .* has changed|size mismatch|Can't open (file|vma|regular)|open_path|No such file or directory/i, code: 'RESTORE_CONFLICT', status: 'retryable', hint: 'a file the task had open is missing or differs on this node; its files must be reachable at the same paths' },
];

export interface CriuFailure {
  code: EngineErrorCode;
  status: EngineFailure['status'];
  /** The error line that explains the failure best. */
  reason: string;
  hint?: string;
  /** A few meaningful error lines, for the message. */
  errors: string[];
}

/**
 * Classifies a failed CRIU run from its log text, stderr and exit code. The reason is the first error line
 * that a rule recognizes, else the first meaningful error line, else stderr's last line, else the exit code.
 */
export function classifyCriuFailure(action: CriuAction, logText: string, stderr: string, exitCode: number | null): CriuFailure {
  const errors = meaningfulErrors(parseCriuLog(logText)).map((e) => e.message);
  const stderrLines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !NOISE.some((n) => n.test(l)) && !/rlimit: Can't setup RLIMIT_NOFILE/.test(l));
  const candidates = [...errors, ...stderrLines];
  for (const rule of RULES) {
    if (!rule.actions.includes(action)) continue;
    const hit = candidates.find((c) => rule.test.test(c));
    if (hit !== undefined) {
      const f: CriuFailure = { code: rule.code, status: rule.status, reason: stripPrefix(hit), errors: errors.slice(0, 3) };
      if (rule.hint) f.hint = rule.hint;
      return f;
    }
  }
  const fallbackCode: EngineErrorCode = action === 'restore' ? 'RESTORE_FAILED' : action === 'check' ? 'ENGINE_UNAVAILABLE' : 'CHECKPOINT_FAILED';
  const reason = errors[0] ?? stderrLines.filter((l) => !/^(Usage|Try|Commands)/.test(l)).at(-1) ?? `criu exited with code ${exitCode}`;
  return { code: fallbackCode, status: action === 'check' ? 'fatal' : 'retryable', reason: stripPrefix(reason), errors: errors.slice(0, 3) };
}

function stripPrefix(line: string): string {
  return line.replace(/^Error\s*\([^)]*\):\s*/, '').replace(/^\S*criu: /, '');
}

/** One-line message for a classified failure. */
export function describeCriuFailure(action: CriuAction, f: CriuFailure, logPath?: string): string {
  let msg = `criu ${action} failed: ${f.reason}`;
  if (f.hint) msg += ` — ${f.hint}`;
  if (logPath) msg += ` (log: ${logPath})`;
  return msg;
}

/** Dump statistics CRIU writes to `stats-dump` (times in microseconds). */
export interface CriuDumpStats {
  freezingTimeUs: number;
  frozenTimeUs: number;
  memdumpTimeUs: number;
  memwriteTimeUs: number;
  pagesScanned: number;
  pagesWritten: number;
}

/** Restore statistics from `stats-restore` (times in microseconds). */
export interface CriuRestoreStats {
  forkingTimeUs: number;
  restoreTimeUs: number;
  pagesRestored: number;
}

/** Minimal protobuf reader: field number → first varint value, or nested bytes. */
function readFields(buf: Buffer, start: number, end: number): Map<number, number | Buffer> {
  const fields = new Map<number, number | Buffer>();
  let pos = start;
  const varint = (): number => {
    let result = 0;
    let mul = 1;
    for (;;) {
      if (pos >= end) throw new RangeError('truncated varint');
      const b = buf[pos++] as number;
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
  };
  while (pos < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      const v = varint();
      if (!fields.has(field)) fields.set(field, v);
    } else if (wire === 2) {
      const len = varint();
      fields.set(field, buf.subarray(pos, pos + len));
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new RangeError(`unsupported wire type ${wire}`);
  }
  return fields;
}

/** The stats entry of a CRIU stats image: two magic words, a 32-bit length, a `stats_entry` message. */
function statsEntry(image: Buffer): Map<number, number | Buffer> | undefined {
  if (image.length < 12) return undefined;
  const len = image.readUInt32LE(8);
  if (12 + len > image.length) return undefined;
  try {
    return readFields(image, 12, 12 + len);
  } catch {
    return undefined;
  }
}

function num(m: Map<number, number | Buffer>, f: number): number {
  const v = m.get(f);
  return typeof v === 'number' ? v : 0;
}

/** Parses a `stats-dump` image (images/stats.proto: dump_stats_entry). */
export function parseDumpStats(image: Buffer): CriuDumpStats | undefined {
  const dump = statsEntry(image)?.get(1);
  if (!Buffer.isBuffer(dump)) return undefined;
  try {
    const d = readFields(dump, 0, dump.length);
    return {
      freezingTimeUs: num(d, 1),
      frozenTimeUs: num(d, 2),
      memdumpTimeUs: num(d, 3),
      memwriteTimeUs: num(d, 4),
      pagesScanned: num(d, 5),
      pagesWritten: num(d, 7),
    };
  } catch {
    return undefined;
  }
}

/** Parses a `stats-restore` image (images/stats.proto: restore_stats_entry). */
export function parseRestoreStats(image: Buffer): CriuRestoreStats | undefined {
  const r = statsEntry(image)?.get(2);
  if (!Buffer.isBuffer(r)) return undefined;
  try {
    const d = readFields(r, 0, r.length);
    return { forkingTimeUs: num(d, 3), restoreTimeUs: num(d, 4), pagesRestored: num(d, 5) };
  } catch {
    return undefined;
  }
}

/** pagemap_entry flags (images/pagemap.proto): the range is in the parent image, left for lazy pages, in pages-N.img. */
const PE_LAZY = 2;

/**
 * Pages of a `pagemap-N.img` left for the target to pull (post-copy): the sum of `nr_pages` of entries flagged
 * lazy. The image: two magic words, then entries of a 32-bit length and a message — a `pagemap_head`, then
 * `pagemap_entry`s (vaddr = 1, flags = 4, nr_pages = 5; CRIU before 3.x: compat_nr_pages = 2).
 */
export function lazyPagesInPagemap(image: Buffer): number {
  let pos = 8;
  let first = true;
  let pages = 0;
  while (pos + 4 <= image.length) {
    const len = image.readUInt32LE(pos);
    pos += 4;
    if (pos + len > image.length) break;
    if (!first) {
      try {
        const e = readFields(image, pos, pos + len);
        if (num(e, 4) & PE_LAZY) pages += num(e, 5) || num(e, 2);
      } catch {
        break;
      }
    }
    first = false;
    pos += len;
  }
  return pages;
}
