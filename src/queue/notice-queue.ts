import type { Notice } from '../notice.js';

/** `created`: a new job was stored; `duplicate`: a job with this notice id already existed (a no-op). */
export type EnqueueOutcome = 'created' | 'duplicate';

/**
 * The notices queue. Implementations store each notice as a job whose id is the notice id, so the same
 * notice delivered twice (from IMDS and a webhook, or after a restart) is one job.
 */
export interface NoticeQueue {
  /** Resolves once the job is durably stored; rejects when the store cannot be reached. */
  enqueue(notice: Notice): Promise<EnqueueOutcome>;
  /** True when the store answers right now. Never throws. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export const NOTICES_QUEUE_NAME = 'notices';
