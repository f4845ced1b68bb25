import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Notice } from '../notice.js';
import type { EnqueueOutcome, NoticeQueue, StoredNotice } from './notice-queue.js';
import type { NoticeSpool } from './spool.js';

export type DeliveryOutcome = EnqueueOutcome | 'spooled';

/**
 * Gets every notice into the queue, whatever Redis is doing: enqueue at once when Redis answers, else
 * append to the fsync'd spool and retry in the background until Redis is back. The promise of `deliver`
 * settles only once the notice is durable (in Redis or in the spool).
 */
export class NoticeDeliverer {
  private drainTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly queue: NoticeQueue,
    private readonly spool: NoticeSpool,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly retryIntervalMs = 1000,
  ) {}

  /** Starts by delivering whatever an earlier run left in the spool. */
  start(): void {
    this.updateSpoolDepth();
    this.scheduleDrain(0);
  }

  async deliver(notice: Notice): Promise<DeliveryOutcome> {
    try {
      const stored = await this.queue.store(notice);
      this.recordStored(notice, stored);
      return stored.outcome;
    } catch (err) {
      this.spool.append(notice);
      this.metrics.enqueueTotal.inc({ result: 'spooled' });
      this.updateSpoolDepth();
      this.logger.warn({ noticeId: notice.id, spool: this.spool.path, err: describeError(err) }, 'Redis unreachable: notice spooled, will deliver when Redis is back');
      this.scheduleDrain(this.retryIntervalMs);
      return 'spooled';
    }
  }

  /** Tries once to move every spooled notice into the queue. Resolves when this attempt is over. */
  drain(): Promise<void> {
    if (!this.draining) {
      this.draining = this.drainOnce().finally(() => {
        this.draining = undefined;
      });
    }
    return this.draining;
  }

  spoolDepth(): number {
    return this.spool.depth();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    await this.draining;
  }

  private async drainOnce(): Promise<void> {
    const pending = this.spool.read();
    if (pending.length === 0) return;
    if (!(await this.queue.ping())) {
      this.scheduleDrain(this.retryIntervalMs);
      return;
    }
    const remaining: Notice[] = [];
    for (const notice of pending) {
      try {
        const stored = await this.queue.store(notice);
        this.recordStored(notice, stored);
        this.logger.info({ noticeId: notice.id, storedAs: stored.id, outcome: stored.outcome }, 'spooled notice delivered');
      } catch (err) {
        this.logger.warn({ noticeId: notice.id, err: describeError(err) }, 'spooled notice still not deliverable');
        remaining.push(notice);
      }
    }
    // Notices spooled while this drain ran are appended after `pending`; keep them.
    const appended = this.spool.read().filter((n) => !pending.some((p) => p.id === n.id));
    this.spool.replace([...remaining, ...appended]);
    this.updateSpoolDepth();
    if (remaining.length + appended.length > 0) this.scheduleDrain(this.retryIntervalMs);
  }

  private recordStored(notice: Notice, stored: StoredNotice): void {
    const outcome: EnqueueOutcome = stored.outcome;
    this.metrics.enqueueTotal.inc({ result: outcome });
    if (stored.newEpisode) {
      this.metrics.noticeEpisodesTotal.inc({ provider: notice.provider });
      this.logger.warn(
        { noticeId: notice.id, storedAs: stored.id, episode: stored.episode, instanceId: notice.instanceId, deadline: notice.deadline },
        'new interruption episode: the instance was interrupted again after an earlier interruption with the same notice id',
      );
    } else if (outcome === 'stale') {
      this.logger.info({ noticeId: notice.id, deadline: notice.deadline }, 'notice of an interruption episode older than the latest one of its instance: not stored');
    }
    const now = Date.now();
    const detectedAt = Date.parse(notice.detectedAt);
    this.metrics.detectionToEnqueueSeconds.observe(Math.max(0, now - detectedAt) / 1000);
    if (notice.deadline) {
      const windowMs = Date.parse(notice.deadline) - detectedAt;
      if (windowMs > 0) this.metrics.deadlineBudgetUsedRatio.observe({ step: 'enqueue' }, (now - detectedAt) / windowMs);
    }
  }

  private updateSpoolDepth(): void {
    this.metrics.spoolDepth.set(this.spool.depth());
  }

  private scheduleDrain(delayMs: number): void {
    if (this.closed || this.drainTimer) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      void this.drain();
    }, delayMs);
    this.drainTimer.unref();
  }
}
