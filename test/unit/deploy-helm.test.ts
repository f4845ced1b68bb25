import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { CHART_DIR, findHelm, helmTemplate, runHelm } from '../../deploy/tools/helm.js';
import { validateObject } from '../../deploy/tools/k8s-schema.js';
import { CONFIG_OPTIONS } from '../../src/config.js';
import { FakeKubeApiServer } from '../../src/k8s/fake-apiserver.js';
import { KubeApi } from '../../src/k8s/kube-api.js';
import { NodeDrainer, TAINT_KEY } from '../../src/k8s/node-drainer.js';
import { K8S_OPTIONS } from '../../src/k8s/options.js';
import { silentLogger } from '../../src/logger.js';
import { makeNotice } from '../../src/notice.js';
import { SOURCE_NAMES } from '../../src/webhook/source.js';
import { WEBHOOK_OPTIONS } from '../../src/webhook/webhook-config.js';

/**
 * The Helm chart, rendered by a real helm (v3.8.1, from the npm package @aws-cdk/asset-kubectl-v20; see
 * deploy/tools/helm.ts) for its documented values; every object checked against the Kubernetes schemas.
 */

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const helm = findHelm();
const describeHelm = helm.ok ? describe : describe.skip;
if (!helm.ok) console.warn(`deploy-helm tests skipped: ${helm.reason}`);

async function render(values: Record<string, unknown> = {}, kubeVersion?: string): Promise<Obj[]> {
  const text = await helmTemplate({ values, ...(kubeVersion ? { kubeVersion } : {}) });
  const objects = parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
  const problems = objects.flatMap((o) => validateObject(o));
  expect(problems).toEqual([]);
  return objects;
}

const find = (objs: Obj[], kind: string, name?: string) => objs.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
const one = (objs: Obj[], kind: string, name?: string) => {
  const found = find(objs, kind, name);
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0]!;
};
const container = (o: Obj) => o.spec.template.spec.containers[0];
const envNames = (o: Obj) => (container(o).env as { name: string }[]).map((e) => e.name);
const env = (o: Obj, name: string) => (container(o).env as Obj[]).find((e) => e.name === name);

const ALL_SOURCES = {
  webhook: {
    enabled: true,
    eventbridge: { secret: 'eb-0123456789abcdef' },
    sns: { topicArns: 'arn:aws:sns:us-east-1:123456789012:spotwatch' },
    pubsub: { audience: 'https://spotwatch.example.com/v1/events/pubsub', serviceAccount: 'push@proj.iam.gserviceaccount.com' },
    eventgrid: { key: 'eg-0123456789abcdef', tenantId: '00000000-0000-0000-0000-000000000000', audience: 'api://spotwatch' },
    ingress: { enabled: true, className: 'nginx', host: 'spotwatch.example.com', tls: [{ hosts: ['spotwatch.example.com'], secretName: 'spotwatch-tls' }] },
  },
  serviceMonitor: { enabled: true, labels: { release: 'prometheus' } },
  agent: { restrictToOwnNode: true, priorityClassName: 'system-node-critical', clusterToken: 'a-cluster-token-of-32-characters!' },
};

describeHelm('Helm chart', () => {
  it('passes helm lint --strict', async () => {
    const out = await runHelm(['lint', '--strict', CHART_DIR]);
    expect(out).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it('defaults: the agent DaemonSet with host PID, the CRIU capabilities, spot affinity and tolerations, node name from the downward API', async () => {
    const objs = await render();
    expect(objs.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Role', 'RoleBinding', 'Secret', 'Secret', 'ServiceAccount']);
    const ds = one(objs, 'DaemonSet', 'spotwatch-agent');
    const pod = ds.spec.template.spec;
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.serviceAccountName).toBe('spotwatch-agent');

    const sc = container(ds).securityContext;
    expect(sc.privileged).toBe(false);
    expect(sc.runAsUser).toBe(0);
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect(sc.capabilities.add).toEqual(expect.arrayContaining(['SYS_ADMIN', 'SYS_PTRACE', 'CHECKPOINT_RESTORE', 'NET_ADMIN', 'SYS_RESOURCE']));
    expect(sc.capabilities.add).not.toContain('SYS_MODULE');
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.seccompProfile).toEqual({ type: 'Unconfined' });
    expect(sc.appArmorProfile).toEqual({ type: 'Unconfined' });

    // Spot nodes of every cloud: any one label matches (ORed terms).
    const terms = pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms as Obj[];
    expect(terms.map((t) => t.matchExpressions[0])).toEqual([
      { key: 'karpenter.sh/capacity-type', operator: 'In', values: ['spot'] },
      { key: 'eks.amazonaws.com/capacityType', operator: 'In', values: ['SPOT'] },
      { key: 'cloud.google.com/gke-spot', operator: 'In', values: ['true'] },
      { key: 'cloud.google.com/gke-preemptible', operator: 'In', values: ['true'] },
      { key: 'kubernetes.azure.com/scalesetpriority', operator: 'In', values: ['spot'] },
    ]);
    expect(pod.tolerations).toEqual(
      expect.arrayContaining([
        { key: 'kubernetes.azure.com/scalesetpriority', operator: 'Equal', value: 'spot', effect: 'NoSchedule' },
        { key: 'cloud.google.com/gke-spot', operator: 'Equal', value: 'true', effect: 'NoSchedule' },
        { key: TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' },
      ]),
    );

    expect(env(ds, 'NODE_NAME')).toEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(env(ds, 'SPOTWATCH_REDIS_URL')).toEqual({ name: 'SPOTWATCH_REDIS_URL', valueFrom: { secretKeyRef: { name: 'spotwatch-redis', key: 'redis-url' } } });
    expect(env(ds, 'SPOTWATCH_K8S')!.value).toBe('true');
    expect(container(ds).args).toEqual(['agent']);
    // Resources from measurement: requests near the measured idle use, no CPU limit.
    expect(container(ds).resources).toEqual({ requests: { cpu: '10m', memory: '96Mi' }, limits: { memory: '1Gi' } });
    expect(container(ds).ports).toEqual([
      { name: 'metrics', containerPort: Number(CONFIG_OPTIONS.httpPort.default), protocol: 'TCP' },
      { name: 'peer', containerPort: Number(CONFIG_OPTIONS.peerPort.default), protocol: 'TCP' },
    ]);
    expect(container(ds).readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });

    // The Secrets: the Redis URL and a generated cluster token.
    const tokenSecret = one(objs, 'Secret', 'spotwatch-agent');
    expect(tokenSecret.stringData['cluster-token']).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(one(objs, 'Secret', 'spotwatch-redis').stringData).toEqual({ 'redis-url': 'redis://redis:6379' });
  });

  it('every SPOTWATCH_* variable the chart sets is one the agent or the webhook reads', async () => {
    const objs = await render(ALL_SOURCES);
    const agentEnv = new Set<string>([...Object.values(CONFIG_OPTIONS), ...Object.values(K8S_OPTIONS)].flatMap((o) => [...o.env]));
    const webhookEnv = new Set<string>(Object.values(WEBHOOK_OPTIONS).flatMap((o) => [...o.env]));
    const ds = one(objs, 'DaemonSet');
    const extra = ['NODE_NAME', 'POD_IP', 'POD_NAME', 'POD_NAMESPACE', 'SPOTWATCH_CRIU']; // downward API; CRIU path (src/engines/criu)
    expect(envNames(ds).filter((n) => !agentEnv.has(n) && !extra.includes(n))).toEqual([]);
    const dep = one(objs, 'Deployment');
    expect(envNames(dep).filter((n) => !webhookEnv.has(n))).toEqual([]);
    expect(env(dep, 'SPOTWATCH_EVENTBRIDGE_HEADER')!.value).toBe(WEBHOOK_OPTIONS.eventbridgeHeader.default);
  });

  it('webhook with every source, Ingress, ServiceMonitors and the own-node admission policy', async () => {
    const objs = await render(ALL_SOURCES);
    const dep = one(objs, 'Deployment', 'spotwatch-webhook');
    expect(dep.spec.replicas).toBe(2);
    expect(container(dep).args).toEqual(['webhook']);
    expect(dep.spec.template.spec.automountServiceAccountToken).toBe(false);
    expect(dep.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(container(dep).securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(container(dep).ports).toEqual([{ name: 'http', containerPort: Number(WEBHOOK_OPTIONS.port.default), protocol: 'TCP' }]);
    expect(env(dep, 'SPOTWATCH_EVENTBRIDGE_SECRET')!.valueFrom.secretKeyRef).toMatchObject({ name: 'spotwatch-webhook', key: 'eventbridge-secret' });
    expect(env(dep, 'SPOTWATCH_PUBSUB_SERVICE_ACCOUNT')!.value).toBe('push@proj.iam.gserviceaccount.com');
    expect(one(objs, 'Secret', 'spotwatch-webhook').stringData).toEqual({ 'eventbridge-secret': 'eb-0123456789abcdef', 'eventgrid-key': 'eg-0123456789abcdef' });

    const svc = one(objs, 'Service', 'spotwatch-webhook');
    expect(svc.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
    // The Ingress exposes the event routes (every source's) and nothing else.
    const ing = one(objs, 'Ingress');
    const paths = ing.spec.rules[0].http.paths as Obj[];
    expect(paths).toEqual([{ path: '/v1/events/', pathType: 'Prefix', backend: { service: { name: 'spotwatch-webhook', port: { name: 'http' } } } }]);
    for (const s of SOURCE_NAMES) expect(`/v1/events/${s}`.startsWith(paths[0]!.path)).toBe(true);
    expect(ing.spec.tls).toEqual([{ hosts: ['spotwatch.example.com'], secretName: 'spotwatch-tls' }]);

    const monitors = find(objs, 'ServiceMonitor');
    expect(monitors.map((m) => m.metadata.labels.release)).toEqual(['prometheus', 'prometheus']);
    const agentMetrics = one(objs, 'Service', 'spotwatch-agent-metrics');
    expect(agentMetrics.spec.clusterIP).toBe('None');
    expect(one(objs, 'PodDisruptionBudget').spec.minAvailable).toBe(1);
    expect(one(objs, 'DaemonSet').spec.template.spec.priorityClassName).toBe('system-node-critical');
    const vap = one(objs, 'ValidatingAdmissionPolicy');
    expect(vap.spec.matchConditions[0].expression).toContain('system:serviceaccount:spotwatch:spotwatch-agent');
    expect(one(objs, 'Secret', 'spotwatch-agent').stringData['cluster-token']).toBe('a-cluster-token-of-32-characters!');
  });

  it('privileged: true replaces the capability list', async () => {
    const objs = await render({ agent: { privileged: true } });
    const sc = container(one(objs, 'DaemonSet')).securityContext;
    expect(sc.privileged).toBe(true);
    expect(sc.capabilities).toBeUndefined();
    expect(sc.allowPrivilegeEscalation).toBeUndefined();
  });

  it('spotOnly: false drops the spot affinity (agents on migration targets too); extra terms stay', async () => {
    const none = await render({ agent: { spotOnly: false } });
    expect(one(none, 'DaemonSet').spec.template.spec.affinity).toBeUndefined();
    const gpu = { matchExpressions: [{ key: 'nvidia.com/gpu.present', operator: 'In', values: ['true'] }] };
    const extra = await render({ agent: { spotOnly: false, extraNodeSelectorTerms: [gpu] } });
    expect(one(extra, 'DaemonSet').spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([gpu]);
  });

  it('existing Secrets: none rendered, the pods refer to them', async () => {
    const objs = await render({
      redis: { existingSecret: 'my-redis', existingSecretKey: 'url' },
      agent: { existingSecret: 'my-agent' },
      webhook: { enabled: true, existingSecret: 'my-webhook' },
    });
    expect(find(objs, 'Secret')).toEqual([]);
    expect(env(one(objs, 'DaemonSet'), 'SPOTWATCH_REDIS_URL')!.valueFrom.secretKeyRef).toEqual({ name: 'my-redis', key: 'url' });
    expect(env(one(objs, 'DaemonSet'), 'SPOTWATCH_CLUSTER_TOKEN')!.valueFrom.secretKeyRef).toEqual({ name: 'my-agent', key: 'cluster-token' });
    expect(env(one(objs, 'Deployment'), 'SPOTWATCH_EVENTGRID_KEY')!.valueFrom.secretKeyRef).toEqual({ name: 'my-webhook', key: 'eventgrid-key', optional: true });
  });

  it('migrate: false leaves out the cluster token and the image receiver', async () => {
    const objs = await render({ agent: { migrate: false } });
    const ds = one(objs, 'DaemonSet');
    expect(envNames(ds)).not.toContain('SPOTWATCH_CLUSTER_TOKEN');
    expect(env(ds, 'SPOTWATCH_MIGRATE')!.value).toBe('false');
    expect(container(ds).ports.map((p: Obj) => p.name)).toEqual(['metrics']);
    expect(find(objs, 'Secret', 'spotwatch-agent')).toEqual([]);
  });

  it('Kubernetes before 1.30: AppArmor by annotation, and no own-node policy', async () => {
    const objs = await render({}, '1.29.4');
    const ds = one(objs, 'DaemonSet');
    expect(ds.spec.template.metadata.annotations).toEqual({ 'container.apparmor.security.beta.kubernetes.io/agent': 'unconfined' });
    expect(container(ds).securityContext.appArmorProfile).toBeUndefined();
    await expect(helmTemplate({ values: { agent: { restrictToOwnNode: true } }, kubeVersion: '1.29.4' })).rejects.toThrow(/needs Kubernetes 1.30/);
  });

  it('refuses values that cannot work, saying which', async () => {
    await expect(helmTemplate({ values: { webhook: { enabled: true } } })).rejects.toThrow(/needs at least one source/);
    await expect(helmTemplate({ values: { agent: { clusterToken: 'short' } } })).rejects.toThrow(/at least 16 characters/);
    await expect(helmTemplate({ values: { redis: { url: '' } } })).rejects.toThrow(/redis.url or redis.existingSecret/);
    await expect(helmTemplate({ values: { webhook: { enabled: true, pubsub: { audience: 'x' } } } })).rejects.toThrow(/pubsub.serviceAccount is required/);
    // values.schema.json: misspelt keys and out-of-range numbers are refused before anything renders.
    await expect(helmTemplate({ values: { agent: { privilegd: true } } })).rejects.toThrow(/Additional property privilegd is not allowed/);
    await expect(helmTemplate({ values: { agent: { pollIntervalMs: 5 } } })).rejects.toThrow(/pollIntervalMs: Must be greater than or equal to 100/);
    await expect(helmTemplate({ values: { redis: { url: 'http://redis' } } })).rejects.toThrow(/redis.url/);
  });

  describe('RBAC is exactly what the agent uses', () => {
    let api: FakeKubeApiServer;
    beforeAll(async () => {
      api = new FakeKubeApiServer({ deleteAfterMs: 10 });
      await api.start();
    });
    afterAll(async () => {
      await api.stop();
    });

    it('every request of a full drain and undo is allowed, and every granted rule is used', async () => {
      const node = 'n1';
      api.addNode(node);
      api.addPod({ namespace: 'web', name: 'web-1', nodeName: node, ownerKind: 'ReplicaSet' });
      const kc = new KubeConfig();
      kc.loadFromString(JSON.stringify(api.kubeconfig()));
      const d = new NodeDrainer({ api: new KubeApi(kc), nodeName: node, logger: silentLogger, retryIntervalMs: 20, deletionPollMs: 10 });
      const n = (kind: 'interruption' | 'cancelled') =>
        makeNotice({ provider: 'gcp', kind, action: 'terminate', instanceId: 'vm-1', detectedAt: new Date(), source: 'imds', deadline: new Date(Date.now() + 30_000) });
      expect((await d.onNotice(n('interruption'))).result).toBe('ok');
      expect((await d.onNotice(n('cancelled'))).result).toBe('ok');

      // Each request as the RBAC attributes the API server would check.
      const used = new Set(
        api.requests.map((r) => {
          const verb = { GET: /\/pods$/.test(r.path) ? 'list' : 'get', PATCH: 'patch', POST: 'create' }[r.method as 'GET' | 'PATCH' | 'POST'];
          const m = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?([a-z]+)(?:\/[^/]+(?:\/([a-z]+))?)?$/.exec(r.path)!;
          const resource = m[3] ? `${m[2]}/${m[3]}` : m[2]!;
          return `${resource}|${verb}|${resource === 'events' ? m[1] : '*'}`;
        }),
      );
      const objs = await render();
      const granted = new Set<string>();
      for (const role of [...find(objs, 'ClusterRole'), ...find(objs, 'Role')]) {
        for (const rule of role.rules as Obj[]) {
          expect(rule.apiGroups).toEqual(['']);
          for (const res of rule.resources) for (const verb of rule.verbs) granted.add(`${res}|${verb}|${role.kind === 'Role' ? role.metadata.namespace : '*'}`);
        }
      }
      expect([...used].sort()).toEqual([...granted].sort());
    });
  });
});
