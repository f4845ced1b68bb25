/**
 * The agent applies its transparent-hugepage policy at start (src/agent/transparent-hugepages.ts): a real agent
 * with the migration runtime, real Redis, the AWS emulator; its log is captured and must say what the node's
 * setting is and what the agent did. `always` is exercised against the real sysfs file in
 * test/unit/transparent-hugepages.test.ts; here the default `keep` must leave the node's setting untouched.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { readThpMode } from '../../src/agent/transparent-hugepages.js';
import { awsProvider } from '../../providers/aws/index.js';
import { agentHarness, type AgentHarness } from '../support/agent-harness.js';

const redisUrl = inject('redisUrl');

describe('agent: transparent hugepages at start', () => {
  let harness: AgentHarness | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await harness?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    harness = dir = undefined;
  });

  it('keep (default): logs the node setting and leaves it as it was', async () => {
    dir = mkdtempSync(join(tmpdir(), 'spotwatch-thp-agent-'));
    harness = await agentHarness(awsProvider, redisUrl, {
      config: {
        migrate: 'true',
        clusterToken: randomBytes(16).toString('hex'),
        peerHost: '127.0.0.1',
        peerPort: '0',
        imageDir: join(dir, 'images'),
        storageDir: join(dir, 'storage'),
      },
    });
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const before = await readThpMode();
    await harness.startAgent({}, { logger: pino({ level: 'info' }, sink) });
    const line = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('transparent_hugepage is'));
    expect(line).toMatchObject({ policy: 'keep', action: 'kept' });
    expect(line?.before).toBe(before);
    expect(line?.msg).toContain(`transparent_hugepage is ${before ?? 'unavailable'}`);
    expect(await readThpMode()).toBe(before);
  });
});
