import { describeError } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';
import { MetadataError } from '../../src/metadata-error.js';
import type { Notice } from '../../src/notice.js';
import type { InstanceIdentity, Lifecycle, NoticeHandler, NoticeWatcher, WatcherHealth, WatcherOptions } from '../../src/provider.js';
import { backoffMs, sleep } from '../../src/util/sleep.js';
import { ImdsClient } from './imds-client.js';
import { awsParsers } from './parsers.js';

/** The IMDS paths that carry notices, each read by the `spotwatch parse` source of the same document. */
export const WATCHED_PATHS = [
  { path: 'spot/instance-action', source: 'aws-instance-action' },
  { path: 'events/recommendations/rebalance', source: 'aws-rebalance' },
  { path: 'events/maintenance/scheduled', source: 'aws-scheduled-events' },
  { path: 'autoscaling/target-lifecycle-state', source: 'aws-target-lifecycle' },
] as const;

/** Longest wait between polls while IMDS keeps failing. */
const MAX_BACKOFF_MS = 5_000;

/**
 * Polls the IMDS notice paths every `pollIntervalMs`. A document that changed since the last successful read
 * is parsed and its notices are handed on (the queue makes repeats a no-op). A failed request — timeout,
 * 5xx, 429, 401 after renewal, refused connection — is never read as "no notice": the last known documents
 * stay as they were, the error is counted, and the next poll backs off.
 */
export class AwsImdsWatcher implements NoticeWatcher {
  private readonly client: ImdsClient;
  private readonly logger: Logger;
  private readonly lastBodies = new Map<string, string>();
  private instanceId: string | undefined;
  private abort = new AbortController();
  private loop: Promise<void> | undefined;
  private lastSuccessAt: Date | undefined;
  private lastCycleEndAt = 0;
  private consecutiveErrors = 0;

  constructor(private readonly options: WatcherOptions) {
    this.logger = options.logger.child({ provider: 'aws' });
    this.client = new ImdsClient({ endpoint: options.endpoint, requestTimeoutMs: options.requestTimeoutMs, imdsV1: options.imdsV1 ?? false, metrics: options.metrics });
    this.instanceId = options.instanceId;
  }

  async identity(signal?: AbortSignal): Promise<InstanceIdentity> {
    for (let attempt = 1; ; attempt++) {
      try {
        const read = async (path: string): Promise<string | undefined> => {
          const answer = await this.client.get(path, signal);
          return answer.status === 200 ? answer.body.trim() : undefined;
        };
        const [instanceId, instanceType, zone, lifeCycle, hostname] = await Promise.all(
          ['instance-id', 'instance-type', 'placement/availability-zone', 'instance-life-cycle', 'local-hostname'].map(read),
        );
        const id = this.options.instanceId ?? instanceId;
        if (!id) throw new MetadataError('other', 'IMDS instance-id: 404 — this does not look like an EC2 instance; pass --instance-id to override');
        this.instanceId = id;
        const lifecycle: Lifecycle = lifeCycle === 'spot' ? 'spot' : lifeCycle === 'on-demand' || lifeCycle === 'scheduled' ? 'on-demand' : 'unknown';
        return { provider: 'aws', instanceId: id, instanceType, zone, lifecycle, hostname };
      } catch (err) {
        if (signal?.aborted) throw err;
        const wait = backoffMs(attempt, 250, MAX_BACKOFF_MS);
        this.countError(err);
        this.logger.warn({ err: describeError(err), retryInMs: wait }, 'cannot read the instance identity from IMDS yet');
        await sleep(wait, signal);
      }
    }
  }

  start(onNotice: NoticeHandler): void {
    if (this.loop) return;
    this.abort = new AbortController();
    this.loop = this.run(onNotice, this.abort.signal);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.loop = undefined;
  }

  health(): WatcherHealth {
    const stalledAfterMs = Math.max(3 * this.options.pollIntervalMs, MAX_BACKOFF_MS) + this.options.requestTimeoutMs * 2;
    const alive = this.loop !== undefined && Date.now() - this.lastCycleEndAt < stalledAfterMs;
    return { alive, lastSuccessAt: this.lastSuccessAt, consecutiveErrors: this.consecutiveErrors };
  }

  private async run(onNotice: NoticeHandler, signal: AbortSignal): Promise<void> {
    this.lastCycleEndAt = Date.now();
    while (!signal.aborted) {
      const started = Date.now();
      const ok = await this.pollOnce(onNotice, signal);
      this.lastCycleEndAt = Date.now();
      const wait = ok
        ? Math.max(0, this.options.pollIntervalMs - (Date.now() - started))
        : backoffMs(this.consecutiveErrors, this.options.pollIntervalMs, Math.max(MAX_BACKOFF_MS, this.options.pollIntervalMs));
      await sleep(wait, signal);
    }
  }

  /** One poll of every watched path; true when all of them answered. */
  private async pollOnce(onNotice: NoticeHandler, signal: AbortSignal): Promise<boolean> {
    const results = await Promise.all(
      WATCHED_PATHS.map(async ({ path, source }) => {
        try {
          const answer = await this.client.get(path, signal);
          return { path, source, body: answer.status === 404 ? '' : answer.body };
        } catch (err) {
          if (!signal.aborted) {
            this.countError(err);
            this.logger.warn({ path, err: describeError(err) }, 'IMDS poll failed; keeping the last known state');
          }
          return undefined;
        }
      }),
    );
    if (signal.aborted) return false;
    const now = new Date();
    const fresh: Notice[] = [];
    for (const result of results) {
      if (!result || this.lastBodies.get(result.path) === result.body) continue;
      try {
        const parser = awsParsers[result.source];
        const notices = result.body === '' || !parser ? [] : parser(result.body, { now, instanceId: this.instanceId });
        this.lastBodies.set(result.path, result.body);
        fresh.push(...notices);
      } catch (err) {
        this.options.metrics.metadataErrorsTotal.inc({ provider: 'aws', reason: 'other' });
        this.logger.warn({ path: result.path, err: describeError(err) }, 'IMDS document could not be parsed; ignored until it changes');
        this.lastBodies.set(result.path, result.body);
      }
    }
    for (const notice of fresh) {
      this.logger.info({ notice }, 'notice detected');
      await onNotice(notice);
    }
    const allAnswered = results.every((r) => r !== undefined);
    if (allAnswered) {
      this.consecutiveErrors = 0;
      this.lastSuccessAt = now;
      this.options.metrics.metadataLastSuccess.set({ provider: 'aws' }, now.getTime() / 1000);
    } else {
      this.consecutiveErrors++;
    }
    return allAnswered;
  }

  private countError(err: unknown): void {
    const reason = err instanceof MetadataError ? err.reason : 'other';
    this.options.metrics.metadataErrorsTotal.inc({ provider: 'aws', reason });
  }
}
