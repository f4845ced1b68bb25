import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small Kubernetes API server for exactly the calls spotwatch makes, speaking the API's wire format
 * (JSON objects with kind/apiVersion, `Status` bodies on errors, resourceVersion conflicts, merge patches,
 * PodDisruptionBudget refusals as 429). For tests and local drills: point a KubeConfig at `url`.
 *
 *   GET    /api/v1/nodes/{name}
 *   PATCH  /api/v1/nodes/{name}                         application/merge-patch+json only; resourceVersion checked
 *   GET    /api/v1/pods?fieldSelector=spec.nodeName=N
 *   GET    /api/v1/namespaces/{ns}/pods/{name}
 *   POST   /api/v1/namespaces/{ns}/pods/{name}/eviction policy/v1 Eviction; uid precondition checked
 *   POST   /api/v1/namespaces/{ns}/events               409 AlreadyExists on a repeated name
 *
 * Anything else answers 404 and is listed in `unexpected`.
 */

type Json = Record<string, unknown>;

export interface FakePod {
  namespace: string;
  name: string;
  nodeName: string;
  uid?: string;
  phase?: string;
  ownerKind?: string;
  annotations?: Record<string, string>;
  terminationGracePeriodSeconds?: number;
  /** Evictions answered 429 (disruption budget) before one is allowed; Infinity: never allowed. */
  pdbBlocks?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: string;
  headers: IncomingMessage['headers'];
  body: unknown;
  at: number;
  status: number;
}

export interface Fault {
  method: string;
  /** Matched against the path (without the query). */
  path: RegExp;
  status: number;
  /** How many matching requests fail (default 1). */
  times?: number;
  /** Instead of answering, hold the request this long (a slow or hung API server). */
  delayMs?: number;
}

export interface FakeApiServerOptions {
  token?: string;
  /** Evicted pods disappear after this long (default 50 ms), as after their grace period. */
  deleteAfterMs?: number;
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Json = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Json) } : {};
  for (const [k, v] of Object.entries(patch as Json)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeKubeApiServer {
  readonly nodes = new Map<string, Json>();
  readonly pods = new Map<string, Json & { _pdbBlocks: number }>();
  readonly events = new Map<string, Json>();
  readonly requests: RecordedRequest[] = [];
  readonly unexpected: string[] = [];
  readonly faults: Fault[] = [];
  /** Called before each node PATCH is applied: lets a test play another writer (bump the resourceVersion). */
  beforeNodePatch: ((node: Json) => void) | undefined;
  /** Called before each eviction is decided (`namespace/name`): lets a test replace or delete the pod. */
  beforeEviction: ((key: string) => void) | undefined;
  private server: Server | undefined;
  private rv = 100;
  private readonly token: string;
  private readonly deleteAfterMs: number;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(options: FakeApiServerOptions = {}) {
    this.token = options.token ?? 'spotwatch-test-token';
    this.deleteAfterMs = options.deleteAfterMs ?? 50;
  }

  get url(): string {
    const addr = this.server?.address() as AddressInfo | null;
    if (!addr) throw new Error('fake API server not started');
    return `http://127.0.0.1:${addr.port}`;
  }

  /** A kubeconfig (as an object for KubeConfig.loadFromOptions, or YAML-compatible JSON text). */
  kubeconfig(): Json {
    return {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'spotwatch', user: { token: this.token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'spotwatch' } }],
      'current-context': 'fake',
    };
  }

  addNode(name: string, spec: { unschedulable?: boolean; taints?: Json[]; annotations?: Record<string, string>; providerID?: string } = {}): void {
    this.nodes.set(name, {
      kind: 'Node',
      apiVersion: 'v1',
      metadata: {
        name,
        uid: randomUUID(),
        resourceVersion: String(++this.rv),
        creationTimestamp: new Date().toISOString(),
        labels: { 'kubernetes.io/hostname': name },
        ...(spec.annotations ? { annotations: spec.annotations } : {}),
      },
      spec: {
        ...(spec.providerID ? { providerID: spec.providerID } : {}),
        ...(spec.unschedulable ? { unschedulable: true } : {}),
        ...(spec.taints ? { taints: spec.taints } : {}),
      },
      status: { conditions: [{ type: 'Ready', status: 'True' }] },
    });
  }

  addPod(p: FakePod): void {
    const uid = p.uid ?? randomUUID();
    this.pods.set(`${p.namespace}/${p.name}`, {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: {
        name: p.name,
        namespace: p.namespace,
        uid,
        resourceVersion: String(++this.rv),
        ...(p.annotations ? { annotations: p.annotations } : {}),
        ...(p.ownerKind
          ? { ownerReferences: [{ apiVersion: p.ownerKind === 'DaemonSet' || p.ownerKind === 'ReplicaSet' ? 'apps/v1' : 'v1', kind: p.ownerKind, name: `${p.name}-owner`, uid: randomUUID(), controller: true }] }
          : {}),
      },
      spec: {
        nodeName: p.nodeName,
        containers: [{ name: 'main', image: 'example/app:1' }],
        ...(p.terminationGracePeriodSeconds !== undefined ? { terminationGracePeriodSeconds: p.terminationGracePeriodSeconds } : {}),
      },
      status: { phase: p.phase ?? 'Running' },
      _pdbBlocks: p.pdbBlocks ?? 0,
    });
  }

  node(name: string): Json {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private send(res: ServerResponse, rec: RecordedRequest, code: number, body: unknown): void {
    rec.status = code;
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    let body: unknown = undefined;
    const rec: RecordedRequest = { method, path: url.pathname, query: url.search, headers: req.headers, body, at: Date.now(), status: 0 };
    this.requests.push(rec);
    if (raw) {
      try {
        body = JSON.parse(raw);
        rec.body = body;
      } catch {
        return this.send(res, rec, 400, status(400, 'BadRequest', 'request body is not JSON'));
      }
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) return this.send(res, rec, 401, status(401, 'Unauthorized', 'Unauthorized'));

    const fault = this.faults.find((f) => f.method === method && f.path.test(url.pathname) && (f.times ?? 1) > 0);
    if (fault) {
      fault.times = (fault.times ?? 1) - 1;
      if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (res.destroyed || req.socket.destroyed) return; // the client gave up
      return this.send(res, rec, fault.status, status(fault.status, fault.status === 403 ? 'Forbidden' : fault.status >= 500 ? 'InternalError' : 'Unknown', `injected fault ${fault.status}`));
    }

    let m: RegExpExecArray | null;
    if ((m = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname))) {
      const name = decodeURIComponent(m[1]!);
      const node = this.nodes.get(name);
      if (!node) return this.send(res, rec, 404, status(404, 'NotFound', `nodes "${name}" not found`, { name, kind: 'nodes' }));
      if (method === 'GET') return this.send(res, rec, 200, node);
      if (method === 'PATCH') {
        const ct = String(req.headers['content-type'] ?? '').split(';')[0];
        if (ct !== 'application/merge-patch+json')
          return this.send(res, rec, 415, status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got ${ct})`));
        this.beforeNodePatch?.(node);
        const meta = node.metadata as Json;
        const want = ((body as Json | undefined)?.metadata as Json | undefined)?.resourceVersion;
        if (want !== undefined && want !== meta.resourceVersion) {
          return this.send(
            res,
            rec,
            409,
            status(409, 'Conflict', `Operation cannot be fulfilled on nodes "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: 'nodes' }),
          );
        }
        const next = mergePatch(node, body) as Json;
        (next.metadata as Json).resourceVersion = String(++this.rv);
        this.nodes.set(name, next);
        return this.send(res, rec, 200, next);
      }
    }
    if (url.pathname === '/api/v1/pods' && method === 'GET') {
      const selector = url.searchParams.get('fieldSelector') ?? '';
      const sm = /^spec\.nodeName=(.+)$/.exec(selector);
      if (selector && !sm) return this.send(res, rec, 400, status(400, 'BadRequest', `field label not supported: ${selector}`));
      const items = [...this.pods.values()].filter((p) => !sm || (p.spec as Json).nodeName === sm[1]).map(({ _pdbBlocks: _, ...p }) => p);
      return this.send(res, rec, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items });
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)(\/eviction)?$/.exec(url.pathname))) {
      const key = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      const pod = this.pods.get(key);
      const notFound = () => this.send(res, rec, 404, status(404, 'NotFound', `pods "${m![2]}" not found`, { name: m![2], kind: 'pods' }));
      if (!m[3] && method === 'GET') {
        if (!pod) return notFound();
        const { _pdbBlocks: _, ...rest } = pod;
        return this.send(res, rec, 200, rest);
      }
      if (m[3] && method === 'POST') {
        const ev = body as Json | undefined;
        if (ev?.apiVersion !== 'policy/v1' || ev?.kind !== 'Eviction' || (ev.metadata as Json | undefined)?.name !== m[2])
          return this.send(res, rec, 400, status(400, 'BadRequest', 'body must be a policy/v1 Eviction naming the pod'));
        this.beforeEviction?.(key);
        const current = this.pods.get(key);
        if (!current) return notFound();
        const meta = current.metadata as Json;
        const wantUid = ((ev.deleteOptions as Json | undefined)?.preconditions as Json | undefined)?.uid;
        if (wantUid !== undefined && wantUid !== meta.uid)
          return this.send(res, rec, 409, status(409, 'Conflict', `Precondition failed: UID in precondition: ${String(wantUid)}, UID in object meta: ${String(meta.uid)}`));
        if (current._pdbBlocks > 0) {
          current._pdbBlocks--;
          return this.send(
            res,
            rec,
            429,
            status(429, 'TooManyRequests', "Cannot evict pod as it would violate the pod's disruption budget.", {
              causes: [{ reason: 'DisruptionBudget', message: 'The disruption budget app-pdb needs 2 healthy pods and has 2 currently' }],
            }),
          );
        }
        if (!meta.deletionTimestamp) {
          meta.deletionTimestamp = new Date().toISOString();
          const t = setTimeout(() => {
            this.timers.delete(t);
            this.pods.delete(key);
          }, this.deleteAfterMs);
          this.timers.add(t);
        }
        return this.send(res, rec, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
      }
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(url.pathname)) && method === 'POST') {
      const ev = body as Json | undefined;
      const name = (ev?.metadata as Json | undefined)?.name;
      if (typeof name !== 'string' || ev?.kind !== 'Event') return this.send(res, rec, 422, status(422, 'Invalid', 'Event.metadata.name: Required value'));
      const key = `${m[1]}/${name}`;
      if (this.events.has(key)) return this.send(res, rec, 409, status(409, 'AlreadyExists', `events "${name}" already exists`, { name, kind: 'events' }));
      const stored = { ...ev, metadata: { ...(ev.metadata as Json), namespace: m[1], uid: randomUUID(), resourceVersion: String(++this.rv) } };
      this.events.set(key, stored);
      return this.send(res, rec, 201, stored);
    }
    this.unexpected.push(`${method} ${url.pathname}${url.search}`);
    return this.send(res, rec, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
  }
}
