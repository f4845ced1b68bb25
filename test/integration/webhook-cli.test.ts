import { describe, expect, inject, it } from 'vitest';
import { Queue } from 'bullmq';
import { randomBytes } from 'node:crypto';
import { runCli, spawnCli } from '../support/spawn-cli.js';
import { waitFor } from '../support/agent-harness.js';
import { spotWarning } from '../fixtures/webhook/events.js';

const redisUrl = inject('redisUrl');
const SECRET = 'cli-secret-0123456789abcdef';

describe('spotwatch webhook (real process)', () => {
  it('reports every configuration problem at once and exits 2, without echoing secrets', async () => {
    const none = await runCli(['webhook', '--port', '0']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no source is configured/);
    const bad = await runCli(['webhook', '--rate-limit', 'fast', '--pubsub-audience', 'https://x/push', '--sns-topic-arns', 'arn:aws:s3:::bucket'], { env: { SPOTWATCH_EVENTBRIDGE_SECRET: 'short-secret', SPOTWATCH_WEBHOOK_PORT: '70000' } });
    expect(bad.code).toBe(2);
    for (const flag of ['--rate-limit', '--pubsub-service-account', '--sns-topic-arns', '--eventbridge-secret (from SPOTWATCH_EVENTBRIDGE_SECRET)', '--port (from SPOTWATCH_WEBHOOK_PORT)']) expect(bad.stderr).toContain(flag);
    expect(bad.stderr).not.toContain('short-secret');
  });

  it('serves deliveries from its environment configuration, stores them, and stops on SIGTERM', async () => {
    const prefix = `whcli${randomBytes(3).toString('hex')}`;
    const queue = new Queue('notices', { connection: { url: redisUrl }, prefix });
    const child = spawnCli(['webhook', '--host', '127.0.0.1', '--port', '0'], { REDIS_URL: redisUrl, SPOTWATCH_QUEUE_PREFIX: prefix, SPOTWATCH_EVENTBRIDGE_SECRET: SECRET });
    let log = '';
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const port = await waitFor('the webhook to listen', 15_000, () => /"port":(\d+)[^\n]*webhook listening/.exec(log)?.[1]);
      expect(log).toContain('"eventbridgeSecret":"***"');
      expect(log).not.toContain(SECRET);
      const response = await fetch(`http://127.0.0.1:${port}/v1/events/eventbridge`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-spotwatch-secret': SECRET }, body: JSON.stringify(spotWarning({ instanceId: 'i-0c11c11c11c11c11c' })) });
      expect(response.status).toBe(200);
      const jobs = await queue.getJobs(['waiting']);
      expect(jobs.map((j) => (j.data as { instanceId: string }).instanceId)).toEqual(['i-0c11c11c11c11c11c']);
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const started = Date.now();
      expect(await exited).toBe(0);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
    }
  });
});
