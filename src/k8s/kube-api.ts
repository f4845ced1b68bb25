import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  type ConfigurationOptions,
  type CoreV1Event,
  type V1Node,
  type V1Pod,
} from '@kubernetes/client-node';

/**
 * The exact Kubernetes API calls spotwatch makes, and nothing else (RBAC in deploy/ grants these and only
 * these): read and merge-patch the node, list and read pods on it, create an Event, create a pods/eviction.
 * Every call carries an abort signal, so no request outlives the notice deadline.
 */

/** What a failed call means for the caller: try again (within the deadline) or give up. */
export type Outcome = 'ok' | 'retryable' | 'fatal';

export class KubeCallError extends Error {
  readonly outcome: Exclude<Outcome, 'ok'>;
  /** HTTP status (0 when no response came: timeout, refused connection). */
  readonly status: number;
  /** The API's Status `reason` (`TooManyRequests`, `Conflict`, `NotFound`, …) when there is one. */
  readonly reason: string | undefined;

  constructor(
    call: string,
    status: number,
    reason: string | undefined,
    message: string,
    options?: { cause?: unknown; outcome?: Exclude<Outcome, 'ok'> },
  ) {
    super(`${call}: ${status ? `HTTP ${status}${reason ? ` ${reason}` : ''}: ` : ''}${message}`, options);
    this.name = 'KubeCallError';
    this.status = status;
    this.reason = reason;
    this.outcome = options?.outcome ?? classifyStatus(status);
  }
}

/**
 * 0 (no response), 408, 409 (stale resourceVersion), 429 (throttled, or a PodDisruptionBudget refusing an
 * eviction) and 5xx are worth another try; any other 4xx (400, 401, 403, 404, 422) will not change by itself.
 */
export function classifyStatus(status: number): Exclude<Outcome, 'ok'> {
  if (status === 0 || status === 408 || status === 409 || status === 429 || status >= 500) return 'retryable';
  return 'fatal';
}

interface StatusBody {
  reason?: string;
  message?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

function parseStatusBody(body: unknown): StatusBody {
  if (typeof body === 'string') {
    try {
      return parseStatusBody(JSON.parse(body));
    } catch {
      return { message: body.slice(0, 300) };
    }
  }
  return body && typeof body === 'object' ? (body as StatusBody) : {};
}

/** Turns whatever the client threw into a KubeCallError with an outcome. */
export function toKubeCallError(call: string, err: unknown): KubeCallError {
  if (err instanceof KubeCallError) return err;
  if (err instanceof ApiException) {
    const status = parseStatusBody(err.body);
    const causes = status.details?.causes?.map((c) => c.message ?? c.reason).filter(Boolean) ?? [];
    const message = [status.message ?? `HTTP ${err.code}`, ...causes].join('; ');
    return new KubeCallError(call, Number(err.code) || 0, status.reason, message, { cause: err });
  }
  const e = (err ?? {}) as { name?: string; type?: string; message?: string; code?: string };
  const aborted = e.name === 'AbortError' || e.type === 'aborted';
  const message = aborted ? 'timed out (aborted at its time limit)' : (e.message ?? String(err));
  // No answer (timeout, refused or reset connection, DNS) may come right; anything else thrown before a
  // request was sent (a bad kubeconfig, missing credentials) will not.
  const network = aborted || e.name === 'FetchError' || e.type === 'system' || (typeof e.code === 'string' && /^E[A-Z]+/.test(e.code));
  return new KubeCallError(call, 0, aborted ? 'Timeout' : e.code, message, { cause: err, outcome: network ? 'retryable' : 'fatal' });
}

export interface NodeRef {
  name: string;
  uid?: string | undefined;
  resourceVersion: string;
  unschedulable: boolean;
  taints: { key: string; value?: string | undefined; effect: string; timeAdded?: string | undefined }[];
  annotations: Record<string, string>;
}

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string | undefined;
  phase?: string | undefined;
  ownerKinds: string[];
  annotations: Record<string, string>;
  deleting: boolean;
  terminationGracePeriodSeconds?: number | undefined;
}

/** Body of a JSON merge patch on a node (lists such as taints are replaced whole: send resourceVersion). */
export interface NodeMergePatch {
  metadata: { resourceVersion: string; annotations?: Record<string, string | null> };
  spec?: { unschedulable?: boolean | null; taints?: NodeRef['taints'] | null };
}

export interface EventBody {
  name: string;
  namespace: string;
  node: { name: string; uid?: string | undefined };
  reason: string;
  message: string;
  type: 'Normal' | 'Warning';
  action: string;
  component: string;
  time: Date;
}

/** The operations NodeDrainer needs; the real implementation is `KubeApi`, tests may pass their own. */
export interface KubeOperations {
  readNode(name: string, signal: AbortSignal): Promise<NodeRef>;
  patchNode(name: string, patch: NodeMergePatch, signal: AbortSignal): Promise<NodeRef>;
  listPodsOnNode(nodeName: string, signal: AbortSignal): Promise<PodRef[]>;
  /** undefined when the pod no longer exists (404). */
  readPod(namespace: string, name: string, signal: AbortSignal): Promise<PodRef | undefined>;
  /** Resolves when the API accepted the eviction; throws KubeCallError (429 = a disruption budget says not now). */
  evictPod(pod: PodRef, gracePeriodSeconds: number | undefined, signal: AbortSignal): Promise<void>;
  /** Resolves `created` or `exists` (409 AlreadyExists: the same event was recorded before). */
  createEvent(event: EventBody, signal: AbortSignal): Promise<'created' | 'exists'>;
}

/** The client's Observable stub (dist/gen/rxjsStub.js): a promise with `toPromise` and `pipe`. */
function observable<T>(promise: Promise<T>): { toPromise(): Promise<T>; pipe<U>(cb: (v: T) => U | Promise<U>): unknown } {
  return { toPromise: () => promise, pipe: (cb) => observable(promise.then(cb)) };
}

/**
 * A per-call option that attaches the abort signal (and a Content-Type) to the request. The object-parameter
 * API hands per-call middleware to the observable layer as is, so `pre`/`post` return observables.
 */
function withSignal(signal: AbortSignal, contentType?: string): ConfigurationOptions {
  const middleware = {
    pre: (ctx: { setSignal(s: AbortSignal): void; setHeaderParam(k: string, v: string): void }) => {
      ctx.setSignal(signal);
      if (contentType) ctx.setHeaderParam('Content-Type', contentType);
      return observable(Promise.resolve(ctx));
    },
    post: <T>(rsp: T) => observable(Promise.resolve(rsp)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' } as unknown as ConfigurationOptions;
}

function toNodeRef(node: V1Node): NodeRef {
  return {
    name: node.metadata?.name ?? '',
    uid: node.metadata?.uid,
    resourceVersion: node.metadata?.resourceVersion ?? '',
    unschedulable: node.spec?.unschedulable === true,
    taints: (node.spec?.taints ?? []).map((t) => ({
      key: t.key,
      ...(t.value !== undefined ? { value: t.value } : {}),
      effect: t.effect,
      ...(t.timeAdded !== undefined ? { timeAdded: new Date(t.timeAdded).toISOString() } : {}),
    })),
    annotations: { ...(node.metadata?.annotations ?? {}) },
  };
}

function toPodRef(pod: V1Pod): PodRef {
  return {
    namespace: pod.metadata?.namespace ?? 'default',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid,
    phase: pod.status?.phase,
    ownerKinds: (pod.metadata?.ownerReferences ?? []).map((o) => o.kind),
    annotations: { ...(pod.metadata?.annotations ?? {}) },
    deleting: pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null,
    terminationGracePeriodSeconds: pod.spec?.terminationGracePeriodSeconds,
  };
}

/** KubeOperations over `@kubernetes/client-node`'s CoreV1Api. */
export class KubeApi implements KubeOperations {
  private readonly core: CoreV1Api;

  constructor(kubeConfig: KubeConfig) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  async readNode(name: string, signal: AbortSignal): Promise<NodeRef> {
    try {
      return toNodeRef(await this.core.readNode({ name }, withSignal(signal)));
    } catch (err) {
      throw toKubeCallError('get node', err);
    }
  }

  async patchNode(name: string, patch: NodeMergePatch, signal: AbortSignal): Promise<NodeRef> {
    try {
      const node = await this.core.patchNode({ name, body: patch, fieldManager: 'spotwatch' }, withSignal(signal, PatchStrategy.MergePatch));
      return toNodeRef(node);
    } catch (err) {
      throw toKubeCallError('patch node', err);
    }
  }

  async listPodsOnNode(nodeName: string, signal: AbortSignal): Promise<PodRef[]> {
    try {
      const list = await this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` }, withSignal(signal));
      return list.items.map(toPodRef);
    } catch (err) {
      throw toKubeCallError('list pods', err);
    }
  }

  async readPod(namespace: string, name: string, signal: AbortSignal): Promise<PodRef | undefined> {
    try {
      return toPodRef(await this.core.readNamespacedPod({ namespace, name }, withSignal(signal)));
    } catch (err) {
      const e = toKubeCallError('get pod', err);
      if (e.status === 404) return undefined;
      throw e;
    }
  }

  async evictPod(pod: PodRef, gracePeriodSeconds: number | undefined, signal: AbortSignal): Promise<void> {
    try {
      await this.core.createNamespacedPodEviction(
        {
          namespace: pod.namespace,
          name: pod.name,
          body: {
            apiVersion: 'policy/v1',
            kind: 'Eviction',
            metadata: { name: pod.name, namespace: pod.namespace },
            // Only evict the pod we listed (not a same-named successor), and only shorten its grace period.
            deleteOptions: {
              ...(pod.uid ? { preconditions: { uid: pod.uid } } : {}),
              ...(gracePeriodSeconds !== undefined ? { gracePeriodSeconds } : {}),
            },
          },
        },
        withSignal(signal),
      );
    } catch (err) {
      throw toKubeCallError('evict pod', err);
    }
  }

  async createEvent(event: EventBody, signal: AbortSignal): Promise<'created' | 'exists'> {
    const time = event.time;
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: event.name, namespace: event.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Node', name: event.node.name, ...(event.node.uid ? { uid: event.node.uid } : {}) },
      reason: event.reason,
      message: event.message,
      type: event.type,
      action: event.action,
      source: { component: event.component, host: event.node.name },
      reportingComponent: event.component,
      reportingInstance: event.node.name,
      firstTimestamp: time,
      lastTimestamp: time,
      count: 1,
    };
    try {
      await this.core.createNamespacedEvent({ namespace: event.namespace, body }, withSignal(signal));
      return 'created';
    } catch (err) {
      const e = toKubeCallError('create event', err);
      if (e.status === 409) return 'exists';
      throw e;
    }
  }
}

/**
 * The cluster credentials: in a pod, its service account (`KUBERNETES_SERVICE_HOST` is set); elsewhere the
 * kubeconfig (`KUBECONFIG`, then ~/.kube/config), so the agent on a plain VM can still act on the cluster.
 */
export function loadKubeConfig(env: NodeJS.ProcessEnv = process.env, kubeconfigPath?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else if (env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}
