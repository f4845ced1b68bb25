import { afterEach, describe, expect, inject, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { LocalRedis } from '../../src/util/local-redis.js';
import { Metrics } from '../../src/metrics.js';
import { silentLogger } from '../../src/logger.js';
import { awsProvider } from '../../providers/aws/index.js';
import { awsAgentHarness, waitFor, type AwsAgentHarness } from '../support/agent-harness.js';

const redisUrl = inject('redisUrl');

describe('agent + AWS emulator + Redis', () => {
  let harness: AwsAgentHarness | undefined;
  let privateRedis: LocalRedis | undefined;
  afterEach(async () => {
    await harness?.close();
    await privateRedis?.destroy();
    harness = undefined;
    privateRedis = undefined;
  });

  it('turns a spot interruption into exactly one job within one poll interval plus 100 ms', async () => {
    harness = await awsAgentHarness(redisUrl, { pollIntervalMs: 250 });
    await harness.control('config', { requireToken: true });
    await harness.startAgent({ pollIntervalMs: '250' });
    const fired = (await harness.control('interrupt', { action: 'stop', timeLeft: 120 })) as { interruption: { visibleAt: string; time: string } };
    const visibleAt = Date.parse(fired.interruption.visibleAt);
    const jobs = await waitFor('the interruption job', 2000, async () => {
      const found = await harness!.jobs();
      return found.length > 0 ? found : undefined;
    });
    const latency = jobs[0]!.timestamp - visibleAt;
    expect(latency).toBeLessThanOrEqual(250 + 100);
    // Several more polls see the same document: still one job.
    await new Promise((r) => setTimeout(r, 700));
    const after = await harness.jobs();
    expect(after).toHaveLength(1);
    expect(after[0]!.data).toMatchObject({ provider: 'aws', kind: 'interruption', action: 'stop', instanceId: 'i-0123456789abcdef0', source: 'imds', deadline: new Date(fired.interruption.time).toISOString() });
    expect(after[0]!.id).toBe(after[0]!.data.id);
  });

  it('keeps one job for the same notice across an agent restart', async () => {
    harness = await awsAgentHarness(redisUrl);
    const first = await harness.startAgent();
    await harness.control('interrupt', {});
    await waitFor('first job', 2000, async () => ((await harness!.jobs()).length === 1 ? true : undefined));
    await first.stop();
    const second = await harness.startAgent();
    // The restarted agent reads the same instance-action and delivers it again: a no-op.
    await waitFor('the restarted agent to re-deliver', 2000, async () => {
      const text = await (await fetch(`http://127.0.0.1:${second.httpPort}/metrics`)).text();
      return /spotwatch_enqueue_total\{result="duplicate"\} 1/.test(text) ? true : undefined;
    });
    expect(await harness.jobs()).toHaveLength(1);
  });

  it('reads nothing into IMDS errors: 500s, timeouts and refused tokens produce no notice and no crash', async () => {
    harness = await awsAgentHarness(redisUrl, { requestTimeoutMs: 200 });
    const agent = await harness.startAgent();
    const metricsUrl = `http://127.0.0.1:${agent.httpPort}/metrics`;

    const faults: [Record<string, unknown>, string][] = [
      [{ status: 500 }, 'http_5xx'],
      [{ delayMs: 1000 }, 'timeout'],
      [{ status: 401 }, 'http_401'],
      [{ drop: true }, 'connection'],
      [{ status: 429 }, 'http_429'],
    ];
    for (const [fault, reason] of faults) {
      await harness.control('fault', fault);
      await waitFor(`a ${reason} error to be counted`, 8000, async () => {
        const text = await (await fetch(metricsUrl)).text();
        return new RegExp(`spotwatch_metadata_errors_total\\{provider="aws",reason="${reason}"\\} [1-9]`).test(text) ? true : undefined;
      });
      expect((await fetch(`http://127.0.0.1:${agent.httpPort}/healthz`)).status).toBe(200);
    }
    expect(await harness.jobs()).toHaveLength(0);
    // Once IMDS recovers, the watcher (after its back-off) sees the next notice.
    await harness.control('clear-faults');
    await harness.control('rebalance');
    const jobs = await waitFor('rebalance job after recovery', 8000, async () => {
      const found = await harness!.jobs();
      return found.length > 0 ? found : undefined;
    });
    expect(jobs.map((j) => j.data.kind)).toEqual(['rebalance']);
  });

  it('keeps a notice already seen while IMDS fails, and renews an expired IMDSv2 token', async () => {
    harness = await awsAgentHarness(redisUrl);
    await harness.control('config', { requireToken: true });
    const agent = await harness.startAgent();
    await harness.control('schedule', { code: 'instance-reboot', notBeforeIn: 900 });
    await waitFor('maintenance job', 2000, async () => ((await harness!.jobs()).length === 1 ? true : undefined));
    await harness.control('fault', { status: 503, count: 8 });
    await new Promise((r) => setTimeout(r, 500));
    await harness.control('expire-tokens');
    await harness.control('interrupt', {});
    const jobs = await waitFor('interruption after token expiry', 8000, async () => {
      const found = await harness!.jobs();
      return found.length === 2 ? found : undefined;
    });
    expect(jobs.map((j) => j.data.kind).sort()).toEqual(['interruption', 'maintenance']);
    const readyz = (await (await fetch(`http://127.0.0.1:${agent.httpPort}/readyz`)).json()) as { status: string };
    expect(readyz.status).toBe('ready');
  });

  it('falls back to IMDSv1 only when configured', async () => {
    harness = await awsAgentHarness(redisUrl);
    // An IMDS that refuses the token PUT (as with a hop limit of 1 behind a proxy): only --imds-v1 may poll without one.
    await harness.control('fault', { status: 403, path: '/latest/api/token' });
    const v1 = await harness.startAgent({ imdsV1: 'true' });
    await harness.control('interrupt', {});
    await waitFor('the notice over IMDSv1', 3000, async () => ((await harness!.jobs()).length === 1 ? true : undefined));
    await v1.stop();

    // Without --imds-v1 the same IMDS is an error that is retried, never a silent downgrade.
    const metrics = new Metrics();
    const strict = awsProvider.createWatcher({ endpoint: harness.emulator.url, pollIntervalMs: 100, requestTimeoutMs: 300, logger: silentLogger, metrics });
    await expect(strict.identity(AbortSignal.timeout(800))).rejects.toThrow();
    expect((await metrics.metadataErrorsTotal.get()).values.find((v) => v.labels.reason === 'http_403')?.value).toBeGreaterThan(0);
  });

  it('spools a notice while Redis is down and delivers it exactly once when Redis is back', async () => {
    privateRedis = await LocalRedis.start();
    harness = await awsAgentHarness(privateRedis.url);
    const agent = await harness.startAgent();
    await privateRedis.stop();
    await harness.control('interrupt', { action: 'hibernate' });
    const spool = harness.config.spoolPath;
    await waitFor('the notice in the spool', 5000, () => (existsSync(spool) && readFileSync(spool, 'utf8').includes('"hibernate"') ? true : undefined));
    const readyz = await fetch(`http://127.0.0.1:${agent.httpPort}/readyz`);
    expect(readyz.status).toBe(503);
    await privateRedis.restart();
    const jobs = await waitFor('the spooled notice in Redis', 10_000, async () => {
      const found = await harness!.jobs().catch(() => []);
      return found.length > 0 ? found : undefined;
    });
    await waitFor('the spool to be emptied', 5000, () => (readFileSync(spool, 'utf8').trim() === '' ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    const final = await harness.jobs();
    expect(final).toHaveLength(1);
    expect(final[0]!.data).toMatchObject({ kind: 'interruption', action: 'hibernate' });
    expect(jobs[0]!.id).toBe(final[0]!.id);
  });
});
