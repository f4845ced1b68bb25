import { describeError } from './errors.js';
import type { Logger } from './logger.js';
import type { Notice } from './notice.js';
import type { NoticeHandler } from './provider.js';

/** Longest wait between two attempts to hand a notice on while the handler keeps failing. */
const MAX_RETRY_MS = 5_000;

/**
 * Hands notices to the watcher's `onNotice`, one at a time and in order, each NEW or CHANGED notice once:
 * a notice whose id and content (everything but `detectedAt`) were already handed on is dropped. A handler
 * that throws does not stop the watcher: the notice stays queued and is retried in the background, with
 * the notices after it waiting behind it so a `cancelled` never overtakes the notice it cancels.
 */
export class NoticeEmitter {
  private readonly accepted = new Map<string, string>();
  private readonly queue: Notice[] = [];
  private chain: Promise<void> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly handler: NoticeHandler,
    private readonly logger: Logger,
  ) {}

  /**
   * Queues `notice` unless it is a repeat; resolves once it was handed on (or its retry is scheduled), with
   * true when the notice was new or changed.
   */
  async emit(notice: Notice): Promise<boolean> {
    const fingerprint = fingerprintOf(notice);
    if (this.stopped || this.accepted.get(notice.id) === fingerprint) return false;
    this.accepted.set(notice.id, fingerprint);
    this.queue.push(notice);
    await this.schedule();
    return true;
  }

  /** Lets the same notice id be emitted again later (after its cancellation). */
  forget(id: string): void {
    this.accepted.delete(id);
  }

  /** Notices accepted but not yet handed on. */
  get pending(): number {
    return this.queue.length;
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.queue.length > 0) {
      this.logger.warn({ undelivered: this.queue.map((n) => n.id) }, 'watcher stopped with notices the handler never accepted');
    }
  }

  private schedule(): Promise<void> {
    const run = this.chain.then(() => this.drain());
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async drain(): Promise<void> {
    while (!this.stopped && this.retryTimer === undefined && this.queue.length > 0) {
      const notice = this.queue[0]!;
      try {
        await this.handler(notice);
        this.queue.shift();
        this.failures = 0;
      } catch (err) {
        this.failures++;
        const wait = Math.min(MAX_RETRY_MS, 250 * 2 ** (this.failures - 1));
        this.logger.error({ noticeId: notice.id, err: describeError(err), retryInMs: wait }, 'notice handler failed; retrying');
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          void this.schedule();
        }, wait);
        return;
      }
    }
  }
}

function fingerprintOf(notice: Notice): string {
  const { detectedAt: _detectedAt, ...rest } = notice;
  return JSON.stringify(rest);
}
