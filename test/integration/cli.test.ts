import { describe, expect, inject, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { awsProvider } from '../../providers/aws/index.js';
import { freePort } from '../../src/util/free-port.js';
import { runCli, spawnCli } from '../support/spawn-cli.js';
import { waitFor } from '../support/agent-harness.js';

const redisUrl = inject('redisUrl');

describe('spotwatch CLI (real process)', () => {
  it('parse: prints one JSON notice per line for an IMDS instance-action', async () => {
    const result = await runCli(['parse', '--source', 'aws-instance-action', '--instance-id', 'i-0123456789abcdef0', '--now', '2026-01-01T00:00:00Z'], {
      stdin: '{"action": "terminate", "time": "2026-01-01T00:02:00Z"}',
    });
    expect(result.code).toBe(0);
    const notice = JSON.parse(result.stdout.trim()) as Record<string, unknown>;
    expect(notice).toMatchObject({ provider: 'aws', kind: 'interruption', action: 'terminate', deadline: '2026-01-01T00:02:00.000Z', detectedAt: '2026-01-01T00:00:00.000Z' });
  });

  it('parse: a malformed payload exits 2 with one line naming the problem', async () => {
    const result = await runCli(['parse', '--source', 'aws-instance-action', '--instance-id', 'i-0123456789abcdef0'], { stdin: '{"action": 5}' });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/action/);
  });

  it('run: a control endpoint that is not the task\'s http URL is refused before anything starts (exit 2)', async () => {
    const result = await runCli(['run', '--id', 'bad-control', '--redis-url', redisUrl, '--prepare-url', 'https://127.0.0.1:9/prepare', '--', 'sleep', '30']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--prepare-url "https://127.0.0.1:9/prepare" is not an http:// URL');
    const noPrepare = await runCli(['run', '--id', 'bad-control', '--redis-url', redisUrl, '--releasable-mib', '100', '--', 'sleep', '30']);
    expect(noPrepare.code).toBe(2);
    expect(noPrepare.stderr).toContain('--releasable-mib needs --prepare-url');
    const stageAlone = await runCli(['run', '--id', 'bad-control', '--redis-url', redisUrl, '--stage-url', 'http://127.0.0.1:9/stage', '--', 'sleep', '30']);
    expect(stageAlone.code).toBe(2);
    expect(stageAlone.stderr).toContain('--stage-url needs --prepare-url and --resume-url');
    const stagedAlone = await runCli(['run', '--id', 'bad-control', '--redis-url', redisUrl, '--prepare-url', 'http://127.0.0.1:9/p', '--staged-mib', '10', '--', 'sleep', '30']);
    expect(stagedAlone.code).toBe(2);
    expect(stagedAlone.stderr).toContain('--staged-mib needs --stage-url');
  });

  it('agent: reports every invalid setting at once and exits 2', async () => {
    const result = await runCli(['agent', '--poll-interval', '5', '--redis-url', 'http://nope', '--provider', 'ibm'], { env: { SPOTWATCH_HTTP_PORT: 'eighty' } });
    expect(result.code).toBe(2);
    for (const flag of ['--poll-interval', '--redis-url', '--provider', '--http-port (from SPOTWATCH_HTTP_PORT)']) expect(result.stderr).toContain(flag);
  });

  it('agent: with no cloud and no emulator it says so and exits non-zero', async () => {
    const port = await freePort();
    const result = await runCli(['agent', '--metadata-endpoint', `http://127.0.0.1:${port}`, '--redis-url', redisUrl, '--http-port', '0', '--log-level', 'silent', '--migrate', 'false']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/NO_CLOUD_DETECTED.*spotwatch simulate aws/);
  });

  it('agent: auto-detects the AWS emulator, enqueues, and shuts down cleanly within 5 s of SIGTERM', async () => {
    const emulator = await awsProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    const work = mkdtempSync(join(tmpdir(), 'spotwatch-cli-'));
    const prefix = `cli${process.pid}`;
    const queue = new Queue('notices', { connection: { url: redisUrl }, prefix });
    const child = spawnCli(['agent', '--metadata-endpoint', emulator.url, '--http-port', '0', '--poll-interval', '100', '--spool', join(work, 'spool.jsonl'), '--migrate', 'false'], {
      REDIS_URL: redisUrl,
      SPOTWATCH_QUEUE_PREFIX: prefix,
    });
    let log = '';
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await waitFor('the agent to watch', 15_000, () => (log.includes('watching for interruption notices') ? true : undefined));
      expect(log).toContain('"effective configuration"');
      expect(log).toContain('"cloud detected"');
      await fetch(`${emulator.controlUrl}/interrupt`, { method: 'POST', body: '{}' });
      await waitFor('the job', 5000, async () => ((await queue.getJobCounts('waiting')).waiting === 1 ? true : undefined));
      const stoppedAt = Date.now();
      const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exit).toBe(0);
      expect(Date.now() - stoppedAt).toBeLessThan(5000);
      expect(log).toContain('agent stopped');
    } finally {
      child.kill('SIGKILL');
      await queue.obliterate({ force: true });
      await queue.close();
      await emulator.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('simulate: drives a running emulator through its control API and rejects bad input clearly', async () => {
    const emulator = await awsProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    try {
      const ok = await runCli(['simulate', 'aws', 'interrupt', '--endpoint', emulator.url, '--action', 'hibernate', '--time-left', '90']);
      expect(ok.code).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ interruption: { action: 'hibernate' } });
      const bad = await runCli(['simulate', 'aws', 'interrupt', '--endpoint', emulator.url, '--action', 'explode']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/action/);
      const unknown = await runCli(['simulate', 'aws', 'teleport', '--endpoint', emulator.url]);
      expect(unknown.code).toBe(2);
    } finally {
      await emulator.close();
    }
  });
});
