import type { Notice } from './notice.js';

/**
 * Episodes: telling a NEW interruption of an instance from a repeat of one already seen.
 *
 * Some notice ids cannot contain anything that changes from one interruption to the next, because the
 * sources of ONE interruption share nothing that does: AWS spot interruptions use the identity
 * `interruption-episode` (IMDS gives the action time, EventBridge the time it sent the warning, each source its
 * own event id) and so do GCP preemptions (the metadata server has no event id; the audit log's timestamp is
 * not when the node saw `preempted=TRUE`). Such an id is the same for every interruption of the instance. For
 * an instance that is terminated that is fine — its id never comes back — but a spot instance whose
 * interruption behaviour is *stop* or *hibernate* (AWS), or a preemptible / Spot VM that is stopped and started
 * again (GCP), can be interrupted again hours later under the same instance id, and a plain "job id = notice id"
 * would swallow that second interruption as a duplicate: nothing would migrate.
 *
 * The notices queue therefore stores these notices per episode (see `BullmqNoticeQueue.store`): it keeps, in
 * Redis, the deadline each episode of the id was first seen with (its anchor) and compares a new notice's
 * deadline with them. Within `gapMs` of an episode's anchor it is that episode (one job, the usual no-op);
 * later than the latest episode by more than `gapMs` it opens a new episode, stored under `<id>~<n>`.
 *
 * Why compare against the recorded episodes instead of putting a time bucket into the id: two sources of one
 * episode may fall on both sides of any fixed bucket boundary however wide the bucket is, and would then get
 * two ids. Comparing with what was recorded has no boundaries; it only needs
 *
 *     (spread of one episode's deadlines across its sources)  ≤  gapMs  <  (distance between two episodes)
 *
 * and then the split into episodes does not depend on the order in which notices arrive (the anchor is any
 * notice of the episode, and every other notice of it is within the spread). The record lives in Redis, so
 * every agent, the webhook and a spool drained hours later all decide alike, and it is changed by one Lua
 * script, so concurrent deliveries of a new episode open it once.
 *
 * The deadline, not `detectedAt`, is compared: it comes from the cloud's data (or from a detection inside the
 * notice window), so a webhook retry many hours later (EventBridge retries for 24 h, Pub/Sub for days), an agent
 * restart re-reading the same document or a notice drained from the spool carries the deadline it had the first
 * time. A notice without a deadline never opens an episode: it belongs to the latest one.
 */
export interface EpisodeRule {
  /**
   * Largest distance between a notice's deadline and an episode's anchor for the notice to be that episode.
   * Wider than the spread of one episode's deadlines over all its sources, narrower than the shortest possible
   * stop → start → interrupted-again cycle.
   */
  gapMs: number;
}

/**
 * AWS stop / hibernate interruptions: 5 min. The deadlines of one episode are the IMDS `time` (when EC2 acts),
 * the warning's time + 120 s and the `stopping` state change's time — seconds apart for a stop; for a hibernate
 * EC2 starts at once, so IMDS `time` can be up to the 120 s of the assumed lead earlier than the EventBridge
 * deadline. A second episode needs the instance stopped (or hibernated: its RAM written to EBS), started again
 * when spot capacity is back, booted and then a new two-minute warning: its deadline is several minutes after
 * the first at the very least, and hours in practice.
 */
export const AWS_EPISODE_GAP_MS = 5 * 60_000;

/**
 * GCP preemptions: 2 min. The deadlines of one episode are the node's detection + 30 s and the audit log
 * entry's timestamp + 30 s (a restarted agent re-detects inside the same 30 s window): well under a minute
 * apart. A second episode needs the VM stopped (30 s after the first notice), started again, booted and
 * preempted again, with a 30 s window of its own.
 */
export const GCP_EPISODE_GAP_MS = 2 * 60_000;

/**
 * The episode rule of a notice, or undefined when its id already names one real-world event (an event id, a
 * scheduled start, a maintenance value) or can never recur (an AWS instance that is terminated never comes
 * back), so "same id, same event" holds and the queue stores it under its own id.
 *
 * - AWS `interruption` with action `stop` or `hibernate` (identity `interruption-episode`).
 * - GCP `interruption` (preemption, identity `interruption-episode`; GCE's "terminate" of a preemptible VM is
 *   its TERMINATED state, from which it can be started again) and GCP `cancelled` (a cancellation carries the
 *   cancelled notice's identity and deadline, so a later episode's cancellation must not be taken for an
 *   earlier one's).
 * - Azure: none. Every Azure notice id contains a per-event id (scheduled event `EventId`, annotation name),
 *   so a new eviction of the same VM already has a new id (see providers/azure/parsers.ts for the two sources
 *   of one eviction that share no key).
 *
 * A pure function of the notice, so every process that stores notices (agents, webhook, spool drain) applies
 * the same rule without any wiring.
 */
export function episodeRule(notice: Pick<Notice, 'provider' | 'kind' | 'action'>): EpisodeRule | undefined {
  switch (notice.provider) {
    case 'aws':
      return notice.kind === 'interruption' && (notice.action === 'stop' || notice.action === 'hibernate') ? { gapMs: AWS_EPISODE_GAP_MS } : undefined;
    case 'gcp':
      return notice.kind === 'interruption' || notice.kind === 'cancelled' ? { gapMs: GCP_EPISODE_GAP_MS } : undefined;
    case 'azure':
      return undefined;
  }
}

/** Separates a notice id from its episode number in the id of a later episode (`<id>~<n>`, n ≥ 2). */
export const EPISODE_SEPARATOR = '~';

/** The id a notice is stored under in its `episode` (1 → the notice id itself, n → `<id>~<n>`). */
export function episodeNoticeId(baseId: string, episode: number): string {
  return episode <= 1 ? baseId : `${baseId}${EPISODE_SEPARATOR}${episode}`;
}
