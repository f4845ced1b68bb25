import type { Notice } from '../notice.js';

/**
 * `created`: a new job was stored; `duplicate`: a job with this notice's (episode) id already existed, or the
 * notice belongs to an earlier episode than the latest one of its id (a no-op); `stale`: an interruption of an
 * earlier episode than the latest one recorded, matching none of the recorded ones — it is over, so nothing is
 * stored (see src/notice-episodes.ts).
 */
export type EnqueueOutcome = 'created' | 'duplicate' | 'stale';

/** What `NoticeQueue.store` did with a notice. */
export interface StoredNotice {
  outcome: EnqueueOutcome;
  /**
   * The id the notice is stored under, which is the id of the notice in the job's data: the notice id, or
   * `<id>~<n>` for the n-th episode (n ≥ 2) of an id that recurs (src/notice-episodes.ts).
   */
  id: string;
  /** Episode number of the notice under its id (1 for notices that have no episodes; 0 when `stale`). */
  episode: number;
  /** True when this notice opened a new episode (episode ≥ 2) of its id: a new interruption of the instance. */
  newEpisode: boolean;
}

/**
 * The notices queue. Implementations store each notice as a job whose id is the notice id, so the same
 * notice delivered twice (from IMDS and a webhook, or after a restart) is one job. Notices whose id recurs
 * across interruptions of one instance (`episodeRule` in src/notice-episodes.ts) are stored per episode: the
 * n-th interruption (n ≥ 2) under `<id>~<n>`, with that id in the job's notice too, so everything downstream
 * (plans, migrations, per-node jobs) tells the episodes apart.
 */
export interface NoticeQueue {
  /** Resolves once the job is durably stored; rejects when the store cannot be reached. */
  enqueue(notice: Notice): Promise<EnqueueOutcome>;
  /** As `enqueue`, and tells the id the notice was stored under and whether it opened a new episode. */
  store(notice: Notice): Promise<StoredNotice>;
  /** True when the store answers right now. Never throws. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export const NOTICES_QUEUE_NAME = 'notices';
