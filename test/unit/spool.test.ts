import { describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/logger.js';
import { makeNotice } from '../../src/notice.js';
import { NoticeSpool } from '../../src/queue/spool.js';

const notice = (instanceId: string) =>
  makeNotice({ provider: 'aws', kind: 'interruption', action: 'terminate', instanceId, detectedAt: new Date(), source: 'imds', identity: 'interruption-episode' });

describe('notice spool', () => {
  it('keeps notices in order, skips torn lines and repeats, and replaces atomically', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spool-'));
    try {
      const spool = new NoticeSpool(join(dir, 'sub', 'spool.jsonl'), silentLogger);
      const a = notice('i-0000000000000000a');
      const b = notice('i-0000000000000000b');
      spool.append(a);
      spool.append(b);
      spool.append(a);
      appendFileSync(spool.path, '{"id": "torn');
      expect(spool.read().map((n) => n.id)).toEqual([a.id, b.id]);
      spool.replace([b]);
      expect(readFileSync(spool.path, 'utf8')).toBe(`${JSON.stringify(b)}\n`);
      expect(spool.depth()).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
