import { describeError } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';
import { MetadataRequestAborted } from '../../src/metadata-error.js';
import { NoticeEmitter } from '../../src/notice-emitter.js';
import { makeNotice, type NoticeFacts } from '../../src/notice.js';
import type { InstanceIdentity, Lifecycle, NoticeHandler, NoticeWatcher, WatcherHealth, WatcherOptions } from '../../src/provider.js';
import { sleep } from '../../src/util/sleep.js';
import { GcpMetadataClient, GcpMetadataError, type GcpValue } from './metadata-client.js';
import {
  GCP_PREEMPTION_DEADLINE_MS,
  GCP_TERMINATE_MAINTENANCE_DEADLINE_MS,
  cancelledFacts,
  maintenanceFacts,
  preemptionFacts,
  readMaintenanceEvent,
  readPreempted,
  type GcpMaintenanceValue,
} from './parsers.js';

/** How long the metadata server may hold one hanging GET (`timeout_sec`) before answering "unchanged". */
export const GCP_HANGING_GET_TIMEOUT_SEC = 60;
/** Wait after a failed request (503, refused connection, timeout) before the next one; the ETag is kept. */
export const GCP_ERROR_BACKOFF_MS = 1_000;

export interface GcpWatcherOptions extends WatcherOptions {
  /** Deadline of a preemption notice, from detection (default 30 s: GCE's preemption window). */
  preemptionDeadlineMs?: number | undefined;
  /** Deadline of a TERMINATE_ON_HOST_MAINTENANCE notice, from detection (default 60 s). */
  terminateMaintenanceDeadlineMs?: number | undefined;
  /** `timeout_sec` of each hanging GET (default 60). */
  hangingTimeoutSec?: number | undefined;
  /** Back-off after a failed request (default 1000 ms, ±20 % jitter). */
  errorBackoffMs?: number | undefined;
}

export interface GcpInstanceIdentity extends InstanceIdentity {
  /** `instance/name`. */
  name?: string | undefined;
  /** `project/project-id`. */
  projectId?: string | undefined;
}

type WatchedKey = 'instance/preempted' | 'instance/maintenance-event';

interface KeyLoop {
  key: WatchedKey;
  /** Last time a request of this loop started or finished; a loop is alive while this stays recent. */
  lastProgressAt: number;
  consecutiveErrors: number;
  etag: string | undefined;
}

/**
 * Watches `instance/preempted` and `instance/maintenance-event` with hanging GETs, one loop per key: a plain
 * GET first (so a value already set at start is seen), then `?wait_for_change=true&last_etag=<etag>` —
 * detection is event-driven, within milliseconds of the change. A failed request (503, refused connection,
 * timeout) backs off about a second and keeps the ETag; an error never clears a notice, and the two keys are
 * independent (NONE on maintenance-event never cancels preempted=TRUE).
 *
 * `WatcherOptions.pollIntervalMs` is not used: nothing is polled.
 */
export class GcpWatcher implements NoticeWatcher {
  private readonly client: GcpMetadataClient;
  private readonly logger: Logger;
  private readonly preemptionDeadlineMs: number;
  private readonly terminateDeadlineMs: number;
  private readonly hangingTimeoutSec: number;
  private readonly errorBackoffMs: number;
  private abort = new AbortController();
  private running: Promise<void> | undefined;
  private emitter: NoticeEmitter | undefined;
  private loops: KeyLoop[] = [];
  private lastSuccessAt: Date | undefined;
  private instanceIdValue: string | undefined;
  private instanceIdRequest: Promise<string> | undefined;
  /** The notice each key currently holds (undefined: nothing announced). */
  private preempted: NoticeFacts | undefined;
  private maintenance: { value: GcpMaintenanceValue; facts: NoticeFacts } | undefined;

  constructor(private readonly options: GcpWatcherOptions) {
    this.logger = options.logger.child({ provider: 'gcp' });
    this.client = new GcpMetadataClient({ endpoint: options.endpoint, requestTimeoutMs: options.requestTimeoutMs, metrics: options.metrics });
    this.instanceIdValue = options.instanceId;
    this.preemptionDeadlineMs = options.preemptionDeadlineMs ?? GCP_PREEMPTION_DEADLINE_MS;
    this.terminateDeadlineMs = options.terminateMaintenanceDeadlineMs ?? GCP_TERMINATE_MAINTENANCE_DEADLINE_MS;
    this.hangingTimeoutSec = options.hangingTimeoutSec ?? GCP_HANGING_GET_TIMEOUT_SEC;
    this.errorBackoffMs = options.errorBackoffMs ?? GCP_ERROR_BACKOFF_MS;
  }

  /** The node's identity; `instance/id` (numeric) is the instance id everywhere on GCP. */
  async identity(signal?: AbortSignal): Promise<GcpInstanceIdentity> {
    const read = (path: string, optional = false) => this.readWithRetry(path, signal, optional);
    const [id, name, zone, machineType, preemptible, projectId, hostname] = await Promise.all([
      read('instance/id'),
      read('instance/name'),
      read('instance/zone'),
      read('instance/machine-type'),
      read('instance/scheduling/preemptible', true),
      read('project/project-id', true),
      read('instance/hostname', true),
    ]);
    const instanceId = this.options.instanceId ?? id!;
    this.instanceIdValue = instanceId;
    const lifecycle: Lifecycle = preemptible === 'TRUE' ? 'spot' : preemptible === 'FALSE' ? 'on-demand' : 'unknown';
    return { provider: 'gcp', instanceId, instanceType: lastSegment(machineType), zone: lastSegment(zone), lifecycle, hostname, name, projectId };
  }

  start(onNotice: NoticeHandler): void {
    if (this.running) return;
    this.abort = new AbortController();
    this.emitter = new NoticeEmitter(onNotice, this.logger);
    const now = Date.now();
    this.loops = (['instance/preempted', 'instance/maintenance-event'] as const).map((key) => ({ key, lastProgressAt: now, consecutiveErrors: 0, etag: undefined }));
    const signal = this.abort.signal;
    // Know the instance id before the first notice needs it (the agent usually read it through identity()).
    this.instanceId(signal).catch(() => undefined);
    this.running = Promise.all(this.loops.map((loop) => this.watch(loop, signal))).then(() => undefined);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
    this.emitter?.stop();
    this.running = undefined;
  }

  health(): WatcherHealth {
    // A hanging GET may legitimately take timeout_sec + the request timeout; then at most one back-off.
    const stalledAfterMs = this.hangingTimeoutSec * 1000 + this.options.requestTimeoutMs + this.errorBackoffMs * 1.2 + 5_000;
    const now = Date.now();
    const alive = this.running !== undefined && !this.abort.signal.aborted && this.loops.every((l) => now - l.lastProgressAt < stalledAfterMs);
    return { alive, lastSuccessAt: this.lastSuccessAt, consecutiveErrors: Math.max(0, ...this.loops.map((l) => l.consecutiveErrors)) };
  }

  private async watch(loop: KeyLoop, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let answer: GcpValue;
      loop.lastProgressAt = Date.now();
      try {
        answer =
          loop.etag === undefined
            ? await this.client.get(loop.key, { signal })
            : await this.client.waitForChange(loop.key, loop.etag, this.hangingTimeoutSec, { signal });
      } catch (err) {
        if (signal.aborted || err instanceof MetadataRequestAborted) break;
        loop.lastProgressAt = Date.now();
        loop.consecutiveErrors++;
        const level = loop.consecutiveErrors === 1 || loop.consecutiveErrors % 30 === 0 ? 'warn' : 'debug';
        this.logger[level]({ key: loop.key, err: describeError(err), consecutiveErrors: loop.consecutiveErrors }, 'metadata request failed; keeping the last known state and ETag');
        await sleep(this.errorBackoffMs * (0.8 + Math.random() * 0.4), signal);
        continue;
      }
      loop.lastProgressAt = Date.now();
      if (loop.consecutiveErrors > 0) this.logger.info({ key: loop.key, after: loop.consecutiveErrors }, 'metadata server answers again');
      loop.consecutiveErrors = 0;
      this.lastSuccessAt = new Date();
      try {
        if (loop.key === 'instance/preempted') await this.onPreempted(answer.value, signal);
        else await this.onMaintenanceEvent(answer.value, signal);
      } catch (err) {
        if (signal.aborted) break;
        // The ETag is not advanced: the next request returns the same value at once and it is tried again.
        this.options.metrics.metadataErrorsTotal.inc({ provider: 'gcp', reason: 'other' });
        this.logger.warn({ key: loop.key, err: describeError(err) }, 'could not act on the metadata value; state unchanged, retrying');
        await sleep(this.errorBackoffMs, signal);
        continue;
      }
      // Without an ETag (a non-conforming server) the hanging GET waits for the next change instead.
      loop.etag = answer.etag ?? loop.etag ?? '';
    }
  }

  private async onPreempted(text: string, signal: AbortSignal): Promise<void> {
    const preempted = readPreempted(text);
    if (preempted && !this.preempted) {
      const instanceId = await this.instanceId(signal);
      const facts = preemptionFacts(instanceId, new Date(), 'imds', this.preemptionDeadlineMs);
      this.preempted = facts;
      const notice = makeNotice(facts);
      this.logger.warn({ notice }, 'GCE preemption notice: instance/preempted=TRUE');
      await this.emitter!.emit(notice);
    } else if (!preempted && this.preempted) {
      const original = this.preempted;
      this.preempted = undefined;
      this.emitter!.forget(makeNotice(original).id);
      const notice = makeNotice(cancelledFacts(original, new Date()));
      this.logger.info({ notice }, 'instance/preempted is FALSE again: preemption notice cancelled');
      await this.emitter!.emit(notice);
    }
  }

  private async onMaintenanceEvent(text: string, signal: AbortSignal): Promise<void> {
    const value = readMaintenanceEvent(text);
    if (value === undefined) {
      this.logger.warn({ value: text.trim() }, 'unknown instance/maintenance-event value; not acted on');
      return;
    }
    if (this.maintenance?.value === value) return;
    if (this.maintenance) {
      const original = this.maintenance.facts;
      this.maintenance = undefined;
      this.emitter!.forget(makeNotice(original).id);
      const notice = makeNotice(cancelledFacts(original, new Date()));
      this.logger.info({ notice, value }, 'host maintenance no longer announced: notice cancelled');
      await this.emitter!.emit(notice);
    }
    if (value === 'NONE') return;
    const facts = maintenanceFacts(value, await this.instanceId(signal), new Date(), this.terminateDeadlineMs);
    this.maintenance = { value, facts };
    const notice = makeNotice(facts);
    if (facts.action === 'migrate') this.logger.info({ notice }, 'live migration announced (MIGRATE_ON_HOST_MAINTENANCE); the VM keeps running');
    else this.logger.warn({ notice }, `host maintenance will stop the VM (${value})`);
    await this.emitter!.emit(notice);
  }

  /** The numeric instance id: the override, else `instance/id` (read once, retried until it answers). */
  private instanceId(signal: AbortSignal): Promise<string> {
    if (this.instanceIdValue !== undefined) return Promise.resolve(this.instanceIdValue);
    this.instanceIdRequest ??= this.readWithRetry('instance/id', signal).then(
      (id) => {
        this.instanceIdValue = id!;
        return id!;
      },
      (err: unknown) => {
        this.instanceIdRequest = undefined;
        throw err;
      },
    );
    return this.instanceIdRequest;
  }

  /** Reads a value, retrying transient failures until `signal` aborts; `optional` keys give undefined on 404. */
  private async readWithRetry(path: string, signal: AbortSignal | undefined, optional = false): Promise<string | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { value } = await this.client.get(path, { signal });
        this.lastSuccessAt = new Date();
        return value.trim();
      } catch (err) {
        if (optional && err instanceof GcpMetadataError && err.status === 404) return undefined;
        if (signal?.aborted || err instanceof MetadataRequestAborted) throw err;
        if (err instanceof GcpMetadataError && !err.retryable) throw err;
        const wait = Math.min(5_000, this.errorBackoffMs * attempt);
        this.logger.warn({ path, err: describeError(err), retryInMs: wait }, 'cannot read the GCE metadata yet');
        await sleep(wait, signal);
        if (signal?.aborted) throw new MetadataRequestAborted('GCE metadata', path);
      }
    }
  }
}

function lastSegment(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  return value.split('/').pop();
}
