import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { noticeSchema, type Notice } from '../notice.js';
import type { Logger } from '../logger.js';

/**
 * A local, append-only spool of notices that could not reach Redis. One JSON notice per line; each append
 * is fsync'd before it returns, so a notice the agent has seen survives a crash of the agent itself.
 *
 * Draining re-enqueues every spooled notice and rewrites the file with those that still failed. A crash
 * between the enqueue and the rewrite only re-enqueues a notice whose job already exists, which is a no-op
 * (job id = notice id): nothing lost, nothing duplicated.
 */
export class NoticeSpool {
  constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  append(notice: Notice): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const fd = openSync(this.path, 'a', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(notice)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Every well-formed notice in the spool, in arrival order, without repeats. Torn or foreign lines are logged and skipped. */
  read(): Notice[] {
    if (!existsSync(this.path)) return [];
    const seen = new Set<string>();
    const notices: Notice[] = [];
    const lines = readFileSync(this.path, 'utf8').split('\n');
    lines.forEach((line, index) => {
      if (line.trim() === '') return;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        // A line torn by a crash mid-append: its notice was never acknowledged as stored.
        this.logger.warn({ spool: this.path, line: index + 1 }, 'skipping unreadable spool line');
        return;
      }
      const parsed = noticeSchema.safeParse(value);
      if (!parsed.success) {
        this.logger.warn({ spool: this.path, line: index + 1 }, 'skipping spool line that is not a notice');
        return;
      }
      if (seen.has(parsed.data.id)) return;
      seen.add(parsed.data.id);
      notices.push(parsed.data);
    });
    return notices;
  }

  depth(): number {
    return this.read().length;
  }

  /** Atomically replaces the spool's content with `remaining` (write to a temp file, fsync, rename). */
  replace(remaining: Notice[]): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, remaining.map((n) => `${JSON.stringify(n)}\n`).join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dirFd = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }
}
