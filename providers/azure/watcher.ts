import { describeError } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';
import { MetadataRequestAborted } from '../../src/metadata-error.js';
import { NoticeEmitter } from '../../src/notice-emitter.js';
import { makeNotice, type Notice, type NoticeFacts } from '../../src/notice.js';
import type { InstanceIdentity, Lifecycle, NoticeHandler, NoticeWatcher, WatcherHealth, WatcherOptions } from '../../src/provider.js';
import { sleep } from '../../src/util/sleep.js';
import { AzureMetadataClient, AzureMetadataError } from './metadata-client.js';
import { cancelledFacts, readScheduledEventsDocument, resourceNameFromCompute, scheduledEventFacts, type ScheduledEventsDocument } from './parsers.js';

/**
 * Timeout of Scheduled Events calls until the first one succeeds: the first call enables the service and
 * "may take up to two minutes"; later calls use `requestTimeoutMs`.
 */
export const AZURE_FIRST_CALL_TIMEOUT_MS = 150_000;
/** Wait after a failed request before the next one (at least the poll interval). */
export const AZURE_ERROR_BACKOFF_MS = 1_000;

export interface AzureWatcherOptions extends WatcherOptions {
  /** Timeout of Scheduled Events calls until one has succeeded (default 150 s). */
  firstCallTimeoutMs?: number | undefined;
  /** Back-off after a failed request (default 1000 ms, never less than the poll interval). */
  errorBackoffMs?: number | undefined;
}

export interface AzureInstanceIdentity extends InstanceIdentity {
  /** ARM resource id of the VM. */
  resourceId?: string | undefined;
  vmId?: string | undefined;
}

interface TrackedEvent {
  facts: NoticeFacts;
  /** When the event was first seen Started (the deadline when NotBefore is empty). */
  startedAt: Date | undefined;
}

/**
 * Polls Scheduled Events every `pollIntervalMs` with `Metadata: true`. Only events whose Resources include
 * this VM count (Azure broadcasts to the whole availability set / placement group); events are tracked by
 * EventId across DocumentIncarnations, so Scheduled → Started is one notice id, and an event that disappears
 * without having started gives a `cancelled` notice. A failed request never changes what is known.
 */
export class AzureWatcher implements NoticeWatcher {
  private readonly client: AzureMetadataClient;
  private readonly logger: Logger;
  private readonly firstCallTimeoutMs: number;
  private readonly errorBackoffMs: number;
  private abort = new AbortController();
  private running: Promise<void> | undefined;
  private emitter: NoticeEmitter | undefined;
  private readonly tracked = new Map<string, TrackedEvent>();
  /** Events of this VM that are over (Completed, Canceled, or meaningless) while they stay in the document. */
  private readonly finished = new Set<string>();
  private resourceNameValue: string | undefined;
  private resourceNameRequest: Promise<string> | undefined;
  private serviceEnabled = false;
  private lastProgressAt = 0;
  private inFlightUntil = 0;
  private lastSuccessAt: Date | undefined;
  private consecutiveErrors = 0;
  private lastIncarnation: number | undefined;

  constructor(private readonly options: AzureWatcherOptions) {
    this.logger = options.logger.child({ provider: 'azure' });
    this.client = new AzureMetadataClient({ endpoint: options.endpoint, requestTimeoutMs: options.requestTimeoutMs, metrics: options.metrics });
    this.resourceNameValue = options.instanceId;
    this.firstCallTimeoutMs = Math.max(options.firstCallTimeoutMs ?? AZURE_FIRST_CALL_TIMEOUT_MS, options.requestTimeoutMs);
    this.errorBackoffMs = Math.max(options.errorBackoffMs ?? AZURE_ERROR_BACKOFF_MS, options.pollIntervalMs);
  }

  /** The node's identity; the instance id is the VM resource name that Scheduled Events lists (`vmss_3`). */
  async identity(signal?: AbortSignal): Promise<AzureInstanceIdentity> {
    const compute = await this.computeWithRetry(signal);
    const instanceId = this.options.instanceId ?? resourceNameFromCompute(compute);
    this.resourceNameValue = instanceId;
    const str = (key: string) => (typeof compute[key] === 'string' && compute[key] !== '' ? (compute[key] as string) : undefined);
    const osProfile = typeof compute.osProfile === 'object' && compute.osProfile !== null ? (compute.osProfile as Record<string, unknown>) : {};
    const priority = str('priority')?.toLowerCase();
    const lifecycle: Lifecycle = priority === 'spot' || priority === 'low' ? 'spot' : priority === 'regular' ? 'on-demand' : 'unknown';
    return {
      provider: 'azure',
      instanceId,
      instanceType: str('vmSize'),
      zone: str('zone') ? `${str('location') ?? ''}-${str('zone')}`.replace(/^-/, '') : str('location'),
      lifecycle,
      hostname: typeof osProfile.computerName === 'string' && osProfile.computerName !== '' ? osProfile.computerName : undefined,
      resourceId: str('resourceId'),
      vmId: str('vmId'),
    };
  }

  start(onNotice: NoticeHandler): void {
    if (this.running) return;
    this.abort = new AbortController();
    this.emitter = new NoticeEmitter(onNotice, this.logger);
    this.lastProgressAt = Date.now();
    this.running = this.run(this.abort.signal);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
    this.emitter?.stop();
    this.running = undefined;
  }

  health(): WatcherHealth {
    const now = Date.now();
    // Alive while a request is within its own timeout (the first call may take two minutes) or the loop
    // finished one recently.
    const stalledAfterMs = Math.max(this.options.pollIntervalMs, this.errorBackoffMs) * 3 + this.options.requestTimeoutMs + 2_000;
    const alive = this.running !== undefined && !this.abort.signal.aborted && (now <= this.inFlightUntil + 2_000 || now - this.lastProgressAt < stalledAfterMs);
    return { alive, lastSuccessAt: this.lastSuccessAt, consecutiveErrors: this.consecutiveErrors };
  }

  /** The incarnation of the last document read (for diagnostics and tests). */
  get documentIncarnation(): number | undefined {
    return this.lastIncarnation;
  }

  private async run(signal: AbortSignal): Promise<void> {
    // Resolve the resource name alongside the first (possibly slow) Scheduled Events call.
    this.resourceName(signal).catch(() => undefined);
    while (!signal.aborted) {
      const started = Date.now();
      let ok = false;
      try {
        const timeoutMs = this.serviceEnabled ? this.options.requestTimeoutMs : this.firstCallTimeoutMs;
        this.inFlightUntil = started + timeoutMs;
        if (!this.serviceEnabled) this.logger.debug({ timeoutMs }, 'first Scheduled Events call (it may take up to two minutes)');
        const body = await this.client.scheduledEvents({ signal, timeoutMs });
        this.inFlightUntil = 0;
        this.serviceEnabled = true;
        this.lastSuccessAt = new Date();
        const doc = readScheduledEventsDocument(body);
        await this.reconcile(doc, await this.resourceName(signal));
        if (this.consecutiveErrors > 0) this.logger.info({ after: this.consecutiveErrors }, 'Scheduled Events answers again');
        this.consecutiveErrors = 0;
        ok = true;
      } catch (err) {
        this.inFlightUntil = 0;
        if (signal.aborted || err instanceof MetadataRequestAborted) break;
        if (!(err instanceof AzureMetadataError)) this.options.metrics.metadataErrorsTotal.inc({ provider: 'azure', reason: 'other' });
        this.consecutiveErrors++;
        const level = this.consecutiveErrors === 1 || this.consecutiveErrors % 30 === 0 ? 'warn' : 'debug';
        this.logger[level]({ err: describeError(err), consecutiveErrors: this.consecutiveErrors }, 'Scheduled Events poll failed; keeping the last known events');
      }
      this.lastProgressAt = Date.now();
      const elapsed = Date.now() - started;
      await sleep(ok ? Math.max(0, this.options.pollIntervalMs - elapsed) : this.errorBackoffMs * (0.8 + Math.random() * 0.4), signal);
    }
  }

  /** Turns one document into notices: new/changed events of this VM, and cancellations of vanished ones. */
  private async reconcile(doc: ScheduledEventsDocument, resourceName: string): Promise<void> {
    const now = new Date();
    if (doc.documentIncarnation !== this.lastIncarnation) {
      this.logger.debug({ incarnation: doc.documentIncarnation, events: doc.events.length }, 'scheduled events document changed');
    }
    this.lastIncarnation = doc.documentIncarnation;
    const present = new Set<string>();
    const fresh: Notice[] = [];
    for (const ev of doc.events) {
      if (!ev.resources.includes(resourceName)) continue;
      present.add(ev.eventId);
      if (this.finished.has(ev.eventId)) continue;
      const previous = this.tracked.get(ev.eventId);
      const startedAt = ev.status === 'Started' ? (previous?.startedAt ?? now) : previous?.startedAt;
      const facts = scheduledEventFacts(ev, resourceName, now, 'imds', startedAt);
      if (!facts || facts.kind === 'cancelled') {
        // Completed, Canceled (Event Grid / Resource Graph spellings), or an EventType with no meaning here.
        this.finished.add(ev.eventId);
        this.tracked.delete(ev.eventId);
        if (previous) this.emitter!.forget(makeNotice(previous.facts).id);
        if (facts?.kind === 'cancelled' && previous) fresh.push(makeNotice(cancelledFacts(previous.facts, now)));
        else if (!previous) this.logger.info({ eventId: ev.eventId, eventType: ev.eventType, status: ev.status }, 'scheduled event with nothing to act on; ignored');
        continue;
      }
      // Started with an empty NotBefore: the deadline is now, or the earlier NotBefore if that came first.
      if (ev.notBefore === undefined && previous?.facts.deadline && facts.deadline && previous.facts.deadline < facts.deadline) {
        facts.deadline = previous.facts.deadline;
      }
      this.tracked.set(ev.eventId, { facts, startedAt });
      fresh.push(makeNotice(facts));
    }
    for (const eventId of this.finished) if (!present.has(eventId)) this.finished.delete(eventId);
    for (const [eventId, event] of this.tracked) {
      if (present.has(eventId)) continue;
      this.tracked.delete(eventId);
      this.emitter!.forget(makeNotice(event.facts).id);
      if (event.startedAt !== undefined) {
        this.logger.info({ eventId }, 'scheduled event finished');
        continue;
      }
      const cancelled = makeNotice(cancelledFacts(event.facts, now));
      this.logger.info({ notice: cancelled }, 'scheduled event withdrawn before it started: notice cancelled');
      fresh.push(cancelled);
    }
    for (const notice of fresh) {
      const isNew = await this.emitter!.emit(notice);
      if (isNew && notice.kind !== 'cancelled') this.logger.warn({ notice }, `scheduled event for this VM: ${notice.kind}/${notice.action}`);
    }
  }

  /** This VM's resource name: the override, else from IMDS compute metadata (retried until it answers). */
  private resourceName(signal: AbortSignal): Promise<string> {
    if (this.resourceNameValue !== undefined) return Promise.resolve(this.resourceNameValue);
    this.resourceNameRequest ??= this.computeWithRetry(signal).then(
      (compute) => {
        this.resourceNameValue = resourceNameFromCompute(compute);
        this.logger.info({ resourceName: this.resourceNameValue }, 'VM resource name for Scheduled Events');
        return this.resourceNameValue;
      },
      (err: unknown) => {
        this.resourceNameRequest = undefined;
        throw err;
      },
    );
    return this.resourceNameRequest;
  }

  private async computeWithRetry(signal: AbortSignal | undefined): Promise<Record<string, unknown>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const compute = await this.client.compute({ signal });
        return compute;
      } catch (err) {
        if (signal?.aborted || err instanceof MetadataRequestAborted) throw err;
        if (err instanceof AzureMetadataError && !err.retryable) throw err;
        const wait = Math.min(5_000, this.errorBackoffMs * attempt);
        this.logger.warn({ err: describeError(err), retryInMs: wait }, 'cannot read the Azure compute metadata yet');
        await sleep(wait, signal);
        if (signal?.aborted) throw new MetadataRequestAborted('Azure IMDS', '/metadata/instance/compute');
      }
    }
  }
}
