import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Registry } from '../registry/registry.js';
import type { StaleDrainResult } from '../registry/types.js';
import { AwakeTracker, type BootClock } from './boot-clock.js';

/**
 * Clock skew allowed between the planner that drained the node and this machine, plus /proc/stat's whole-second
 * boot time. A live notice always drains a node after the run it is about began, and its deadline (30–120 s on
 * every cloud) lies even later, so a few seconds never make a live drain look old.
 */
export const DRAIN_CLOCK_TOLERANCE_MS = 2000;

export interface StaleDrainReleaserOptions {
  registry: Registry;
  nodeId: string;
  /** This machine's instance id (from the metadata service). */
  instanceId: string;
  clock: BootClock;
  logger: Logger;
  metrics: Metrics;
  toleranceMs?: number;
  now?: () => number;
}

/**
 * Lifts this node's drain once the notice behind it is over. The planner drains a noticed node (no new work)
 * and heartbeats never clear that; but a stopped or hibernated spot instance (AWS) or a preempted VM (GCP) can
 * come back under the same node and instance id, and must then take work again. The agent checks when it
 * starts, after a resume from hibernation, and on every heartbeat tick after that (a single atomic script: it
 * costs one round trip while the node is not draining).
 *
 * Node ids reused by another machine (a new instance that got the old one's hostname or Kubernetes node name):
 * the drain of a notice about another instance does not apply to this machine and is lifted too. The planner no
 * longer sets such drains (it checks the node's instance atomically with the drain); this lifts those an older
 * spotwatch set.
 */
export class StaleDrainReleaser {
  private readonly tracker: AwakeTracker;
  private readonly log: Logger;
  private lastKept = '';

  constructor(private readonly o: StaleDrainReleaserOptions) {
    this.tracker = new AwakeTracker(o.clock, o.now);
    this.log = o.logger.child({ component: 'drain' });
  }

  /** Start of this machine's current run (boot or resume), ms since the epoch. */
  get awakeSince(): number {
    return this.tracker.awakeSince;
  }

  /** Checks once (call when the agent starts and on every heartbeat tick). Never throws: a failure is logged. */
  async check(): Promise<StaleDrainResult | undefined> {
    try {
      if (this.tracker.poll()) this.log.info({ awakeSince: new Date(this.tracker.awakeSince).toISOString() }, 'machine resumed from suspend or hibernation');
      const result = await this.o.registry.releaseStaleDrain(this.o.nodeId, {
        instanceId: this.o.instanceId,
        awakeSince: this.tracker.awakeSince,
        toleranceMs: this.o.toleranceMs ?? DRAIN_CLOCK_TOLERANCE_MS,
      });
      this.report(result);
      return result;
    } catch (err) {
      this.log.warn({ err: describeError(err) }, 'could not check whether this node is draining for a notice that is over');
      return undefined;
    }
  }

  private report(result: StaleDrainResult): void {
    if (result.verdict === 'none') {
      this.lastKept = '';
      return;
    }
    const fields = {
      noticeId: result.noticeId,
      reason: result.reason,
      drainedAt: iso(result.drainingSince),
      deadline: iso(result.deadline),
      noticeInstanceId: result.instanceId || undefined,
      instanceId: this.o.instanceId,
      awakeSince: iso(this.tracker.awakeSince),
      wokeBy: this.tracker.wokeBy,
    };
    if (result.verdict === 'cleared') {
      this.lastKept = '';
      const reason = result.reason === 'other-instance' ? 'other-instance' : this.tracker.wokeBy === 'resume' ? 'resumed' : 'rebooted';
      this.o.metrics.drainReleasedTotal.inc({ reason });
      this.log.info(fields, `node back after ${result.noticeId}: taking work again`);
      return;
    }
    // Kept: said once per notice and reason, not on every tick.
    const key = `${result.noticeId}|${result.reason}`;
    if (key === this.lastKept) return;
    this.lastKept = key;
    if (result.reason === 'unknown') this.log.warn(fields, 'node is draining, but the drain does not say when it was set (an older spotwatch set it): it stays until the notice is cancelled');
    else this.log.info(fields, result.reason === 'current' ? 'node is draining for a notice of this run: it takes no new work' : 'node is draining for a notice whose deadline is still ahead: it takes no new work');
  }
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined || !Number.isFinite(ms) ? undefined : new Date(ms).toISOString();
}
