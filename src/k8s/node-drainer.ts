import type { KubeConfig } from '@kubernetes/client-node';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Notice, NoticeAction, NoticeKind } from '../notice.js';
import { KubeApi, KubeCallError, toKubeCallError, type KubeOperations, type NodeMergePatch, type NodeRef, type Outcome, type PodRef } from './kube-api.js';
import type { K8sMetrics } from './metrics.js';

/**
 * What the agent does to its own Kubernetes node when a notice arrives:
 *
 * | notice | node | pods |
 * | --- | --- | --- |
 * | `interruption`, or `maintenance` that stops / reboots / ends the node | cordon + taint `spotwatch.io/interruption=<kind>:NoSchedule` + Event | evict every pod that was not migrated (Eviction API: PodDisruptionBudgets hold; 429 is retried until the deadline) |
 * | `rebalance` | taint `…=rebalance:NoSchedule` + Event (no cordon) | none |
 * | `maintenance` that only freezes or live-migrates | Event | none |
 * | `cancelled` | uncordon (only if spotwatch cordoned it) + remove the taint + Event | none |
 *
 * Every step is bounded by the notice deadline (less a margin): no request, retry or wait runs past it.
 * Each step reports `ok`, `retryable` (it might still work later: the deadline came first) or `fatal`.
 */

export const TAINT_KEY = 'spotwatch.io/interruption';
export const TAINT_EFFECT = 'NoSchedule';
/** Set when spotwatch cordoned a node that was schedulable, so `cancelled` uncordons only what spotwatch cordoned. */
export const CORDONED_BY_ANNOTATION = 'spotwatch.io/cordoned-by';
/** The notice behind the current taint (id, kind, deadline), for people and for other tools. */
export const NOTICE_ANNOTATION = 'spotwatch.io/notice';
export const EVENT_COMPONENT = 'spotwatch-agent';

/** Actions that take the node away: pods on it must go (migrated or evicted). */
const DISRUPTIVE_ACTIONS: ReadonlySet<NoticeAction> = new Set(['terminate', 'stop', 'hibernate', 'reboot', 'redeploy']);
/** A stronger taint value is never replaced by a weaker one (an interruption outranks a rebalance). */
const TAINT_RANK: Record<string, number> = { rebalance: 1, maintenance: 2, interruption: 3 };

export type Step = 'cordon' | 'taint' | 'event' | 'list-pods' | 'uncordon';

export interface StepResult {
  step: Step;
  result: Outcome | 'skipped';
  attempts: number;
  detail: string;
}

export type PodOutcome =
  | 'evicted'
  | 'gone'
  | 'blocked'
  | 'failed'
  | 'skipped_migrated'
  | 'skipped_daemonset'
  | 'skipped_mirror'
  | 'skipped_finished'
  | 'skipped_deleting';

export interface PodResult {
  namespace: string;
  name: string;
  outcome: PodOutcome;
  result: Outcome | 'skipped';
  attempts: number;
  /** For evicted pods: whether the pod was gone before the deadline (only checked when waiting is on). */
  terminated?: boolean;
  detail?: string;
}

export interface DrainReport {
  noticeId: string;
  node: string;
  kind: NoticeKind;
  plan: 'drain' | 'taint' | 'event' | 'restore';
  /** Budget end (deadline less margin, or start + the no-deadline budget). */
  budgetEndsAt: string;
  steps: StepResult[];
  pods: PodResult[];
  /** fatal if any step or eviction was fatal, else retryable if any was, else ok. */
  result: Outcome;
  durationMs: number;
}

export interface PodKey {
  namespace: string;
  name: string;
}

export interface NodeDrainerOptions {
  api: KubeOperations;
  /** This node's Kubernetes name (NODE_NAME from the downward API). */
  nodeName: string;
  logger: Logger;
  metrics?: K8sMetrics | undefined;
  /** Namespace of the Events (node events live in `default`, as the kubelet's do). */
  eventNamespace?: string;
  /** Evict pods that were not migrated (default true). Off: cordon, taint and Event only. */
  evict?: boolean;
  /** Stop this long before the notice deadline (default 2000 ms). */
  deadlineMarginMs?: number;
  /** Budget for notices without a deadline, and for `cancelled` (default 120 000 ms). */
  noDeadlineBudgetMs?: number;
  /** First retry delay; doubles up to `maxRetryIntervalMs` (defaults 500 ms and 5000 ms). */
  retryIntervalMs?: number;
  maxRetryIntervalMs?: number;
  /** Time limit of one API request, capped by what is left of the budget (default 5000 ms). */
  requestTimeoutMs?: number;
  /** Evictions in flight at once (default 8). */
  evictionConcurrency?: number;
  /** After an eviction is accepted, poll until the pod is gone (default true). */
  waitForDeletion?: boolean;
  /** Poll interval of that wait (default 1000 ms). */
  deletionPollMs?: number;
  now?: () => number;
}

export interface NoticeContext {
  /** Pods whose task spotwatch migrated (or will): never evicted. `namespace/name` strings or keys. */
  migratedPods?: Iterable<PodKey | string>;
}

class Budget {
  constructor(
    readonly endsAt: number,
    private readonly now: () => number,
    private readonly requestTimeoutMs: number,
  ) {}

  remaining(): number {
    return this.endsAt - this.now();
  }

  /** An abort signal for one request: its own limit, or the end of the budget, whichever comes first. */
  signal(): AbortSignal {
    return AbortSignal.timeout(Math.max(1, Math.min(this.requestTimeoutMs, this.remaining())));
  }

  /**
   * Sleeps `ms`, shortened so that one more try still fits before the end; false when no try fits any more
   * (less than MIN_TRY_MS left).
   */
  async sleep(ms: number): Promise<boolean> {
    const wait = Math.min(ms, this.remaining() - MIN_TRY_MS);
    if (wait <= 0) return false;
    await new Promise((r) => setTimeout(r, wait));
    return this.remaining() >= MIN_TRY_MS;
  }

  /** The same budget, ending `ms` earlier. */
  shortened(ms: number): Budget {
    return new Budget(this.endsAt - ms, this.now, this.requestTimeoutMs);
  }
}

/** A request to the API server on the same network answers in milliseconds; below this, do not start one. */
const MIN_TRY_MS = 100;
/** Evictions stop this long before the budget ends, leaving time to record the outcome as an Event. */
const DRAIN_EVENT_RESERVE_MS = 500;

function podKeyString(p: PodKey | string): string {
  return typeof p === 'string' ? p : `${p.namespace}/${p.name}`;
}

/** Kubernetes object names: at most 253 characters of [a-z0-9.-]. */
function eventName(node: string, noticeId: string, suffix: string): string {
  const tail = `.${noticeId}.${suffix}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-');
  return `${node.toLowerCase().slice(0, 253 - tail.length)}${tail}`;
}

export function planFor(notice: Notice): DrainReport['plan'] {
  switch (notice.kind) {
    case 'interruption':
      return 'drain';
    case 'maintenance':
      return DISRUPTIVE_ACTIONS.has(notice.action) ? 'drain' : 'event';
    case 'rebalance':
      return 'taint';
    case 'cancelled':
      return 'restore';
  }
}

/** Which pods on the node must be evicted, and why the others are left alone. */
export function selectPods(pods: PodRef[], migrated: ReadonlySet<string>): { evict: PodRef[]; skipped: PodResult[] } {
  const evict: PodRef[] = [];
  const skipped: PodResult[] = [];
  const skip = (p: PodRef, outcome: PodOutcome, detail: string) =>
    skipped.push({ namespace: p.namespace, name: p.name, outcome, result: 'skipped', attempts: 0, detail });
  for (const pod of pods) {
    if (migrated.has(`${pod.namespace}/${pod.name}`)) skip(pod, 'skipped_migrated', 'migrated by spotwatch');
    else if (pod.phase === 'Succeeded' || pod.phase === 'Failed') skip(pod, 'skipped_finished', `phase ${pod.phase}`);
    else if (pod.annotations['kubernetes.io/config.mirror'] !== undefined) skip(pod, 'skipped_mirror', 'static pod (mirror): the kubelet owns it');
    else if (pod.ownerKinds.includes('DaemonSet')) skip(pod, 'skipped_daemonset', 'DaemonSet pod: it tolerates the cordon and would come back');
    else if (pod.deleting) skip(pod, 'skipped_deleting', 'already being deleted');
    else evict.push(pod);
  }
  return { evict, skipped };
}

function overall(results: { result: Outcome | 'skipped' }[]): Outcome {
  if (results.some((r) => r.result === 'fatal')) return 'fatal';
  if (results.some((r) => r.result === 'retryable')) return 'retryable';
  return 'ok';
}

/**
 * Cordons, taints, records and drains this node on a notice; undoes it on `cancelled`. One instance per
 * agent; `onNotice` may be called again with the same notice (after a restart, or from a second source):
 * every step is idempotent, and a call for a notice already in progress returns the same report.
 */
export class NodeDrainer {
  private readonly api: KubeOperations;
  private readonly nodeName: string;
  private readonly logger: Logger;
  private readonly metrics: K8sMetrics | undefined;
  private readonly now: () => number;
  private readonly opts: Required<Omit<NodeDrainerOptions, 'api' | 'nodeName' | 'logger' | 'metrics' | 'now'>>;
  private readonly inFlight = new Map<string, Promise<DrainReport>>();

  constructor(options: NodeDrainerOptions) {
    this.api = options.api;
    this.nodeName = options.nodeName;
    this.logger = options.logger.child({ component: 'k8s', node: options.nodeName });
    this.metrics = options.metrics;
    this.now = options.now ?? Date.now;
    this.opts = {
      eventNamespace: options.eventNamespace ?? 'default',
      evict: options.evict ?? true,
      deadlineMarginMs: options.deadlineMarginMs ?? 2_000,
      noDeadlineBudgetMs: options.noDeadlineBudgetMs ?? 120_000,
      retryIntervalMs: options.retryIntervalMs ?? 500,
      maxRetryIntervalMs: options.maxRetryIntervalMs ?? 5_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
      evictionConcurrency: options.evictionConcurrency ?? 8,
      waitForDeletion: options.waitForDeletion ?? true,
      deletionPollMs: options.deletionPollMs ?? 1_000,
    };
  }

  /** A drainer talking to the cluster of `kubeConfig` through `@kubernetes/client-node`. */
  static fromKubeConfig(kubeConfig: KubeConfig, options: Omit<NodeDrainerOptions, 'api'>): NodeDrainer {
    return new NodeDrainer({ ...options, api: new KubeApi(kubeConfig) });
  }

  onNotice(notice: Notice, context: NoticeContext = {}): Promise<DrainReport> {
    const running = this.inFlight.get(notice.id);
    if (running) return running;
    const work = this.handle(notice, context).finally(() => this.inFlight.delete(notice.id));
    this.inFlight.set(notice.id, work);
    return work;
  }

  private budgetFor(notice: Notice, started: number): Budget {
    const fallback = started + this.opts.noDeadlineBudgetMs;
    const endsAt =
      notice.deadline && notice.kind !== 'cancelled' ? Math.min(Date.parse(notice.deadline) - this.opts.deadlineMarginMs, fallback) : fallback;
    return new Budget(endsAt, this.now, this.opts.requestTimeoutMs);
  }

  private async handle(notice: Notice, context: NoticeContext): Promise<DrainReport> {
    const started = this.now();
    const budget = this.budgetFor(notice, started);
    const plan = planFor(notice);
    const steps: StepResult[] = [];
    let pods: PodResult[] = [];
    const log = this.logger.child({ noticeId: notice.id, kind: notice.kind, action: notice.action, plan });

    if (budget.remaining() < MIN_TRY_MS) {
      steps.push({ step: 'event', result: 'skipped', attempts: 0, detail: `deadline ${notice.deadline} (less ${this.opts.deadlineMarginMs} ms) already passed` });
      log.warn({ deadline: notice.deadline }, 'notice deadline already passed: no Kubernetes action taken');
    } else if (plan === 'drain') {
      const nodeStep = await this.taintNode(notice, budget, true);
      steps.push(nodeStep);
      const uid = nodeStep.result === 'ok' ? this.lastNodeUid : undefined;
      const migrated = new Set([...(context.migratedPods ?? [])].map(podKeyString));
      const [eventStep, drained] = await Promise.all([
        this.recordEvent(notice, budget, 'notice', uid, this.noticeMessage(notice, plan, migrated.size)),
        this.opts.evict ? this.drainPods(budget.shortened(DRAIN_EVENT_RESERVE_MS), migrated) : Promise.resolve({ steps: [] as StepResult[], pods: [] as PodResult[] }),
      ]);
      steps.push(eventStep, ...drained.steps);
      pods = drained.pods;
      if (this.opts.evict && pods.length > 0) {
        steps.push(await this.recordEvent(notice, budget, 'drained', uid, this.drainedMessage(pods), overall(pods) === 'ok' ? 'Normal' : 'Warning'));
      }
    } else if (plan === 'taint') {
      const nodeStep = await this.taintNode(notice, budget, false);
      steps.push(nodeStep, await this.recordEvent(notice, budget, 'notice', this.lastNodeUid, this.noticeMessage(notice, plan, 0)));
    } else if (plan === 'event') {
      steps.push(await this.recordEvent(notice, budget, 'notice', undefined, this.noticeMessage(notice, plan, 0)));
    } else {
      const nodeStep = await this.restoreNode(budget);
      steps.push(nodeStep, await this.recordEvent(notice, budget, 'notice', this.lastNodeUid, `${nodeStep.detail} (${this.describe(notice)})`, 'Normal'));
    }

    for (const s of steps) this.metrics?.actionsTotal.inc({ action: s.step, result: s.result });
    for (const p of pods) this.metrics?.evictionsTotal.inc({ outcome: p.outcome });
    const result = overall([...steps, ...pods]);
    const durationMs = this.now() - started;
    this.metrics?.drainSeconds.observe({ kind: notice.kind, result }, durationMs / 1000);
    const report: DrainReport = {
      noticeId: notice.id,
      node: this.nodeName,
      kind: notice.kind,
      plan,
      budgetEndsAt: new Date(budget.endsAt).toISOString(),
      steps,
      pods,
      result,
      durationMs,
    };
    const summary = { result, durationMs, steps: steps.map((s) => `${s.step}:${s.result}`), pods: countBy(pods.map((p) => p.outcome)) };
    if (result === 'ok') log.info(summary, 'kubernetes actions done');
    else log.warn({ ...summary, problems: [...steps, ...pods].filter((r) => r.result === 'fatal' || r.result === 'retryable') }, 'kubernetes actions incomplete');
    return report;
  }

  private lastNodeUid: string | undefined;

  private describe(notice: Notice): string {
    return `${notice.provider} ${notice.kind} (${notice.action}) of ${notice.instanceId}${notice.deadline ? `, deadline ${notice.deadline}` : ''}, notice ${notice.id}`;
  }

  private noticeMessage(notice: Notice, plan: DrainReport['plan'], migrated: number): string {
    const what =
      plan === 'drain'
        ? `cordoned, tainted ${TAINT_KEY}=${notice.kind}:${TAINT_EFFECT}${this.opts.evict ? `, evicting pods not migrated (${migrated} migrated)` : ''}`
        : plan === 'taint'
          ? `tainted ${TAINT_KEY}=${notice.kind}:${TAINT_EFFECT}`
          : 'no action on the node';
    return `${this.describe(notice)}: ${what}`;
  }

  private drainedMessage(pods: PodResult[]): string {
    const counts = countBy(pods.map((p) => p.outcome));
    const blocked = pods.filter((p) => p.outcome === 'blocked' || p.outcome === 'failed').map((p) => `${p.namespace}/${p.name}`);
    return `drain finished: ${Object.entries(counts)
      .map(([k, v]) => `${v} ${k}`)
      .join(', ')}${blocked.length ? `; not evicted: ${blocked.slice(0, 10).join(', ')}${blocked.length > 10 ? ', …' : ''}` : ''}`;
  }

  /** Retries `fn` on retryable errors, with backoff, until it succeeds, fails for good, or the budget ends. */
  private async retry<T>(budget: Budget, fn: () => Promise<T>): Promise<{ value?: T; error?: KubeCallError; attempts: number }> {
    let delay = this.opts.retryIntervalMs;
    for (let attempts = 1; ; attempts++) {
      try {
        return { value: await fn(), attempts };
      } catch (err) {
        const error = toKubeCallError('kubernetes', err);
        if (error.outcome === 'fatal' || !(await budget.sleep(delay))) return { error, attempts };
        delay = Math.min(delay * 2, this.opts.maxRetryIntervalMs);
      }
    }
  }

  /**
   * One merge patch (guarded by resourceVersion: taints are a list, replaced whole) that sets the taint and,
   * for a drain, `unschedulable`. A stronger existing spotwatch taint is kept.
   */
  private async taintNode(notice: Notice, budget: Budget, cordon: boolean): Promise<StepResult> {
    const step: Step = cordon ? 'cordon' : 'taint';
    let changed = false;
    const { error, attempts } = await this.retry(budget, async () => {
      const node = await this.api.readNode(this.nodeName, budget.signal());
      this.lastNodeUid = node.uid;
      const patch = this.taintPatch(node, notice, cordon);
      if (!patch) return;
      await this.api.patchNode(this.nodeName, patch, budget.signal());
      changed = true;
    });
    if (error) return { step, result: error.outcome, attempts, detail: error.message };
    const what = cordon ? `unschedulable, ${TAINT_KEY}:${TAINT_EFFECT}` : `${TAINT_KEY}:${TAINT_EFFECT}`;
    return { step, result: 'ok', attempts, detail: changed ? `node ${this.nodeName}: ${what}` : `node ${this.nodeName} already ${what}` };
  }

  private taintPatch(node: NodeRef, notice: Notice, cordon: boolean): NodeMergePatch | undefined {
    const existing = node.taints.find((t) => t.key === TAINT_KEY && t.effect === TAINT_EFFECT);
    const keepExisting = existing !== undefined && (TAINT_RANK[existing.value ?? ''] ?? 0) >= (TAINT_RANK[notice.kind] ?? 0);
    const needTaint = !keepExisting;
    const needCordon = cordon && !node.unschedulable;
    if (!needTaint && !needCordon) return undefined;
    const patch: NodeMergePatch = { metadata: { resourceVersion: node.resourceVersion, annotations: {} }, spec: {} };
    if (needTaint) {
      const others = node.taints.filter((t) => !(t.key === TAINT_KEY && t.effect === TAINT_EFFECT));
      patch.spec!.taints = [...others, { key: TAINT_KEY, value: notice.kind, effect: TAINT_EFFECT, timeAdded: new Date(this.now()).toISOString() }];
      patch.metadata.annotations![NOTICE_ANNOTATION] = JSON.stringify({ id: notice.id, kind: notice.kind, action: notice.action, deadline: notice.deadline ?? null });
    }
    if (needCordon) {
      patch.spec!.unschedulable = true;
      patch.metadata.annotations![CORDONED_BY_ANNOTATION] = notice.id;
    }
    return patch;
  }

  /** Removes spotwatch's taint, and uncordons when (and only when) spotwatch cordoned the node. */
  private async restoreNode(budget: Budget): Promise<StepResult> {
    let detail = '';
    const { error, attempts } = await this.retry(budget, async () => {
      const node = await this.api.readNode(this.nodeName, budget.signal());
      this.lastNodeUid = node.uid;
      const ours = node.taints.some((t) => t.key === TAINT_KEY);
      const cordonedByUs = node.annotations[CORDONED_BY_ANNOTATION] !== undefined;
      if (!ours && !cordonedByUs && node.annotations[NOTICE_ANNOTATION] === undefined) {
        detail = `node ${this.nodeName} carries no spotwatch taint or cordon: nothing to undo`;
        return;
      }
      const patch: NodeMergePatch = {
        metadata: { resourceVersion: node.resourceVersion, annotations: { [CORDONED_BY_ANNOTATION]: null, [NOTICE_ANNOTATION]: null } },
        spec: { taints: node.taints.filter((t) => t.key !== TAINT_KEY) },
      };
      if (cordonedByUs) patch.spec!.unschedulable = false;
      await this.api.patchNode(this.nodeName, patch, budget.signal());
      detail = `node ${this.nodeName}: removed ${TAINT_KEY}${cordonedByUs ? ', uncordoned' : node.unschedulable ? ' (left cordoned: spotwatch did not cordon it)' : ''}`;
    });
    if (error) return { step: 'uncordon', result: error.outcome, attempts, detail: error.message };
    return { step: 'uncordon', result: 'ok', attempts, detail };
  }

  private async recordEvent(
    notice: Notice,
    budget: Budget,
    suffix: string,
    uid: string | undefined,
    message: string,
    type: 'Normal' | 'Warning' = notice.kind === 'cancelled' ? 'Normal' : 'Warning',
  ): Promise<StepResult> {
    if (budget.remaining() < MIN_TRY_MS) return { step: 'event', result: 'skipped', attempts: 0, detail: 'no time left before the deadline' };
    const reason =
      suffix === 'drained'
        ? 'SpotwatchDrainFinished'
        : { interruption: 'SpotInterruption', rebalance: 'RebalanceRecommendation', maintenance: 'ScheduledMaintenance', cancelled: 'NoticeCancelled' }[notice.kind];
    const { value, error, attempts } = await this.retry(budget, () =>
      this.api.createEvent(
        {
          name: eventName(this.nodeName, notice.id, suffix),
          namespace: this.opts.eventNamespace,
          node: { name: this.nodeName, uid },
          reason,
          message: message.slice(0, 1024),
          type,
          action: suffix === 'drained' ? 'Drain' : notice.kind === 'cancelled' ? 'Uncordon' : 'Cordon',
          component: EVENT_COMPONENT,
          time: new Date(this.now()),
        },
        budget.signal(),
      ),
    );
    if (error) return { step: 'event', result: error.outcome, attempts, detail: error.message };
    return { step: 'event', result: 'ok', attempts, detail: `${reason} event ${value === 'exists' ? 'already recorded' : 'created'}` };
  }

  private async drainPods(budget: Budget, migrated: ReadonlySet<string>): Promise<{ steps: StepResult[]; pods: PodResult[] }> {
    const listed = await this.retry(budget, () => this.api.listPodsOnNode(this.nodeName, budget.signal()));
    if (listed.error || !listed.value) {
      const e = listed.error;
      return { steps: [{ step: 'list-pods', result: e?.outcome ?? 'fatal', attempts: listed.attempts, detail: e?.message ?? 'no pod list' }], pods: [] };
    }
    const { evict, skipped } = selectPods(listed.value, migrated);
    const results: PodResult[] = [];
    let next = 0;
    const worker = async () => {
      while (next < evict.length) {
        const pod = evict[next++]!;
        results.push(await this.evictOne(pod, budget));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.evictionConcurrency, evict.length) }, worker));
    const step: StepResult = { step: 'list-pods', result: 'ok', attempts: listed.attempts, detail: `${listed.value.length} pod(s) on the node, ${evict.length} to evict` };
    return { steps: [step], pods: [...results, ...skipped] };
  }

  private async evictOne(pod: PodRef, budget: Budget): Promise<PodResult> {
    const base = { namespace: pod.namespace, name: pod.name };
    let delay = this.opts.retryIntervalMs;
    let last: KubeCallError | undefined;
    for (let attempts = 1; ; attempts++) {
      // Never ask for a longer grace period than the pod has, nor one that ends after the budget.
      const left = Math.floor(budget.remaining() / 1000);
      const own = pod.terminationGracePeriodSeconds ?? 30;
      const grace = own > left ? Math.max(1, left) : undefined;
      try {
        await this.api.evictPod(pod, grace, budget.signal());
        const terminated = this.opts.waitForDeletion ? await this.waitGone(pod, budget) : undefined;
        this.logger.info({ pod: `${pod.namespace}/${pod.name}`, attempts, gracePeriodSeconds: grace, terminated }, 'pod evicted');
        return { ...base, outcome: 'evicted', result: 'ok', attempts, ...(terminated !== undefined ? { terminated } : {}) };
      } catch (err) {
        last = toKubeCallError('evict pod', err);
        if (last.status === 404) return { ...base, outcome: 'gone', result: 'ok', attempts, detail: 'pod no longer exists' };
        // The uid precondition failed: a new pod of the same name replaced the one listed (elsewhere, after the cordon).
        if (last.status === 409) return { ...base, outcome: 'gone', result: 'ok', attempts, detail: 'pod was replaced by a new one of the same name' };
        if (last.outcome === 'fatal') {
          this.logger.error({ pod: `${pod.namespace}/${pod.name}`, err: last.message }, 'eviction refused');
          return { ...base, outcome: 'failed', result: 'fatal', attempts, detail: last.message };
        }
        if (last.status === 429) this.logger.debug({ pod: `${pod.namespace}/${pod.name}`, attempts, err: last.message }, 'eviction blocked by a disruption budget; retrying');
        if (!(await budget.sleep(delay))) {
          const blocked = last.status === 429;
          this.logger.warn({ pod: `${pod.namespace}/${pod.name}`, attempts, err: describeError(last) }, blocked ? 'disruption budget held until the deadline' : 'eviction still failing at the deadline');
          return { ...base, outcome: blocked ? 'blocked' : 'failed', result: 'retryable', attempts, detail: last.message };
        }
        delay = Math.min(delay * 2, this.opts.maxRetryIntervalMs);
      }
    }
  }

  /** Polls until the pod (this uid) is gone; false when it is still there at the end of the budget. */
  private async waitGone(pod: PodRef, budget: Budget): Promise<boolean> {
    for (;;) {
      try {
        const now = await this.api.readPod(pod.namespace, pod.name, budget.signal());
        if (!now || (pod.uid && now.uid !== pod.uid)) return true;
      } catch (err) {
        if (err instanceof KubeCallError && err.outcome === 'fatal') return false;
      }
      if (!(await budget.sleep(this.opts.deletionPollMs))) return false;
    }
  }
}

function countBy(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
