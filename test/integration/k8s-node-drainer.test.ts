import { KubeConfig } from '@kubernetes/client-node';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeKubeApiServer } from '../../src/k8s/fake-apiserver.js';
import { KubeApi } from '../../src/k8s/kube-api.js';
import { K8sMetrics } from '../../src/k8s/metrics.js';
import { CORDONED_BY_ANNOTATION, NOTICE_ANNOTATION, NodeDrainer, TAINT_KEY, type NodeDrainerOptions } from '../../src/k8s/node-drainer.js';
import { createNodeDrainer, loadK8sConfig } from '../../src/k8s/options.js';
import { silentLogger } from '../../src/logger.js';
import { makeNotice, type Notice, type NoticeAction, type NoticeKind } from '../../src/notice.js';

/**
 * NodeDrainer through the real @kubernetes/client-node client, against a local server that speaks the
 * Kubernetes API wire format for the calls used (src/k8s/fake-apiserver.ts).
 */

const NODE = 'ip-10-0-1-23.ec2.internal';
type Json = Record<string, unknown>;

function notice(kind: NoticeKind, action: NoticeAction, deadlineInMs?: number, eventId?: string): Notice {
  return makeNotice({
    provider: 'aws',
    kind,
    action,
    instanceId: 'i-0abc1234567890def',
    detectedAt: new Date(),
    source: 'imds',
    ...(deadlineInMs !== undefined ? { deadline: new Date(Date.now() + deadlineInMs) } : {}),
    ...(eventId ? { eventId } : {}),
  });
}

let api: FakeKubeApiServer;
let registry: Registry;

function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(JSON.stringify(api.kubeconfig()));
  return kc;
}

function drainer(extra: Partial<NodeDrainerOptions> = {}): NodeDrainer {
  return new NodeDrainer({
    api: new KubeApi(kubeConfig()),
    nodeName: NODE,
    logger: silentLogger,
    metrics: new K8sMetrics(registry),
    retryIntervalMs: 50,
    maxRetryIntervalMs: 200,
    deletionPollMs: 25,
    requestTimeoutMs: 1_000,
    deadlineMarginMs: 300,
    ...extra,
  });
}

const spec = (n: Json) => n.spec as { unschedulable?: boolean; taints?: { key: string; value?: string; effect: string }[] };
const annotations = (n: Json) => ((n.metadata as Json).annotations ?? {}) as Record<string, string>;
const calls = (method: string, re: RegExp) => api.requests.filter((r) => r.method === method && re.test(r.path));

beforeEach(async () => {
  api = new FakeKubeApiServer({ deleteAfterMs: 40 });
  await api.start();
  registry = new Registry();
  api.addNode(NODE, { taints: [{ key: 'nvidia.com/gpu', value: 'present', effect: 'NoSchedule' }] });
  api.addNode('other-node');
  api.addPod({ namespace: 'web', name: 'frontend-7d9f-abcde', nodeName: NODE, ownerKind: 'ReplicaSet', terminationGracePeriodSeconds: 30 });
  api.addPod({ namespace: 'infer', name: 'llm-0', nodeName: NODE, ownerKind: 'StatefulSet' });
  api.addPod({ namespace: 'kube-system', name: 'spotwatch-agent-x1', nodeName: NODE, ownerKind: 'DaemonSet' });
  api.addPod({ namespace: 'kube-system', name: `kube-proxy-${NODE}`, nodeName: NODE, annotations: { 'kubernetes.io/config.mirror': 'abc' } });
  api.addPod({ namespace: 'batch', name: 'job-done', nodeName: NODE, phase: 'Succeeded', ownerKind: 'Job' });
  api.addPod({ namespace: 'web', name: 'elsewhere', nodeName: 'other-node', ownerKind: 'ReplicaSet' });
});

afterEach(async () => {
  await api.stop();
});

describe('NodeDrainer on an interruption', () => {
  it('cordons, taints, records an Event and evicts only the pods that were not migrated', async () => {
    const n = notice('interruption', 'terminate', 10_000);
    const report = await drainer().onNotice(n, { migratedPods: ['infer/llm-0'] });

    expect(report.result).toBe('ok');
    expect(report.plan).toBe('drain');
    const node = api.node(NODE);
    expect(spec(node).unschedulable).toBe(true);
    expect(spec(node).taints).toEqual([
      { key: 'nvidia.com/gpu', value: 'present', effect: 'NoSchedule' },
      expect.objectContaining({ key: TAINT_KEY, value: 'interruption', effect: 'NoSchedule' }),
    ]);
    expect(annotations(node)[CORDONED_BY_ANNOTATION]).toBe(n.id);
    expect(JSON.parse(annotations(node)[NOTICE_ANNOTATION]!)).toMatchObject({ id: n.id, kind: 'interruption', action: 'terminate' });

    // Wire details: bearer token, merge patch with the resourceVersion read just before.
    const patch = calls('PATCH', /^\/api\/v1\/nodes\//)[0]!;
    expect(patch.headers['content-type']).toMatch(/^application\/merge-patch\+json/);
    expect(patch.headers.authorization).toBe('Bearer spotwatch-test-token');
    expect((patch.body as Json).metadata).toMatchObject({ resourceVersion: expect.any(String) });

    // Pods: only the ReplicaSet pod is evicted (uid precondition); the migrated, DaemonSet, mirror and
    // finished pods are left alone, and the pod on another node is never touched.
    const evictions = calls('POST', /\/eviction$/);
    expect(evictions.map((r) => r.path)).toEqual(['/api/v1/namespaces/web/pods/frontend-7d9f-abcde/eviction']);
    expect(evictions[0]!.body).toMatchObject({ apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: 'frontend-7d9f-abcde', namespace: 'web' } });
    expect(((evictions[0]!.body as Json).deleteOptions as Json).preconditions).toEqual({ uid: expect.any(String) });
    expect(calls('GET', /^\/api\/v1\/pods$/)[0]!.query).toBe(`?fieldSelector=${encodeURIComponent(`spec.nodeName=${NODE}`)}`);
    const byName = Object.fromEntries(report.pods.map((p) => [`${p.namespace}/${p.name}`, p]));
    expect(byName['web/frontend-7d9f-abcde']).toMatchObject({ outcome: 'evicted', result: 'ok', terminated: true });
    expect(byName['infer/llm-0']).toMatchObject({ outcome: 'skipped_migrated' });
    expect(byName['kube-system/spotwatch-agent-x1']).toMatchObject({ outcome: 'skipped_daemonset' });
    expect(byName[`kube-system/kube-proxy-${NODE}`]).toMatchObject({ outcome: 'skipped_mirror' });
    expect(byName['batch/job-done']).toMatchObject({ outcome: 'skipped_finished' });
    expect(byName['web/elsewhere']).toBeUndefined();
    expect(api.pods.has('web/frontend-7d9f-abcde')).toBe(false);
    expect(api.pods.has('infer/llm-0')).toBe(true);

    // Events on the node, in the default namespace: the notice, then the drain result.
    const events = [...api.events.values()];
    expect(events.map((e) => e.reason)).toEqual(['SpotInterruption', 'SpotwatchDrainFinished']);
    expect(events[0]).toMatchObject({
      type: 'Warning',
      involvedObject: { kind: 'Node', name: NODE, apiVersion: 'v1', uid: (api.node(NODE).metadata as Json).uid },
      source: { component: 'spotwatch-agent', host: NODE },
      metadata: { namespace: 'default' },
    });
    expect(String(events[0]!.message)).toContain(`${TAINT_KEY}=interruption:NoSchedule`);
    expect(String(events[1]!.message)).toContain('1 evicted');
    expect(api.unexpected).toEqual([]);

    const metrics = await registry.metrics();
    expect(metrics).toMatch(/spotwatch_k8s_actions_total\{action="cordon",result="ok"\} 1/);
    expect(metrics).toMatch(/spotwatch_k8s_evictions_total\{outcome="evicted"\} 1/);
    expect(metrics).toMatch(/spotwatch_k8s_evictions_total\{outcome="skipped_migrated"\} 1/);
    expect(metrics).toMatch(/spotwatch_k8s_drain_seconds_count\{kind="interruption",result="ok"\} 1/);
  });

  it('retries an eviction that a PodDisruptionBudget refuses (429) until it is allowed', async () => {
    api.addPod({ namespace: 'web', name: 'api-0', nodeName: NODE, ownerKind: 'ReplicaSet', pdbBlocks: 2 });
    const report = await drainer().onNotice(notice('interruption', 'terminate', 10_000), { migratedPods: [{ namespace: 'infer', name: 'llm-0' }] });
    expect(report.result).toBe('ok');
    expect(report.pods.find((p) => p.name === 'api-0')).toMatchObject({ outcome: 'evicted', attempts: 3 });
    expect(calls('POST', /api-0\/eviction$/).map((r) => r.status)).toEqual([429, 429, 201]);
  });

  it('gives up on a pod the budget keeps protecting at the deadline, never after it', async () => {
    api.addPod({ namespace: 'web', name: 'api-0', nodeName: NODE, ownerKind: 'ReplicaSet', pdbBlocks: Infinity });
    const n = notice('interruption', 'terminate', 1_500);
    const deadline = Date.parse(n.deadline!);
    const report = await drainer({ deadlineMarginMs: 300 }).onNotice(n, { migratedPods: ['infer/llm-0'] });
    const finishedAt = Date.now();

    expect(report.result).toBe('retryable');
    const blocked = report.pods.find((p) => p.name === 'api-0')!;
    expect(blocked).toMatchObject({ outcome: 'blocked', result: 'retryable' });
    expect(blocked.attempts).toBeGreaterThan(3);
    expect(blocked.detail).toContain('disruption budget');
    // Nothing is sent after the budget end (deadline - margin), and the call returns before the deadline.
    expect(Math.max(...api.requests.map((r) => r.at))).toBeLessThanOrEqual(deadline - 300 + 20);
    expect(finishedAt).toBeLessThan(deadline);
    // The other pod went anyway, and the drain event says which one stayed.
    expect(report.pods.find((p) => p.name === 'frontend-7d9f-abcde')).toMatchObject({ outcome: 'evicted' });
    // Evictions stop half a second before the budget end, which leaves time to record what stayed.
    const drained = [...api.events.values()].find((e) => e.reason === 'SpotwatchDrainFinished');
    expect(drained).toMatchObject({ type: 'Warning', message: expect.stringContaining('not evicted: web/api-0') });
    expect(String(drained!.message)).toMatch(/1 evicted.*1 blocked|1 blocked.*1 evicted/);
  });

  it('treats a pod replaced by a same-named one (uid precondition fails) as gone, and a vanished one too', async () => {
    api.addPod({ namespace: 'web', name: 'api-0', nodeName: NODE, ownerKind: 'StatefulSet', pdbBlocks: 1 });
    let replaced = false;
    api.beforeEviction = (key) => {
      if (key === 'web/api-0' && calls('POST', /api-0\/eviction$/).length === 2 && !replaced) {
        replaced = true;
        api.addPod({ namespace: 'web', name: 'api-0', nodeName: 'other-node', ownerKind: 'StatefulSet' }); // new uid
      }
      if (key === 'web/frontend-7d9f-abcde') api.pods.delete(key);
    };
    const report = await drainer().onNotice(notice('interruption', 'terminate', 10_000), { migratedPods: ['infer/llm-0'] });
    expect(report.result).toBe('ok');
    expect(report.pods.find((p) => p.name === 'api-0')).toMatchObject({ outcome: 'gone', attempts: 2, detail: expect.stringContaining('replaced') });
    expect(calls('POST', /api-0\/eviction$/).map((r) => r.status)).toEqual([429, 409]);
    expect(report.pods.find((p) => p.name === 'frontend-7d9f-abcde')).toMatchObject({ outcome: 'gone', detail: 'pod no longer exists' });
    expect(api.pods.has('web/api-0')).toBe(true); // the new pod is untouched
  });

  it('re-reads the node and retries on a resourceVersion conflict, and on a 5xx', async () => {
    let writes = 0;
    api.beforeNodePatch = (node) => {
      // Another writer (the kubelet updating the node) wins the first race.
      if (writes++ === 0) (node.metadata as Json).resourceVersion = '999999';
    };
    api.faults.push({ method: 'POST', path: /\/events$/, status: 503, times: 2 });
    const report = await drainer().onNotice(notice('interruption', 'terminate', 10_000));
    expect(report.result).toBe('ok');
    expect(report.steps.find((s) => s.step === 'cordon')).toMatchObject({ result: 'ok', attempts: 2 });
    expect(calls('PATCH', /nodes/).map((r) => r.status)).toEqual([409, 200]);
    expect(report.steps.find((s) => s.step === 'event')).toMatchObject({ result: 'ok', attempts: 3 });
    expect(spec(api.node(NODE)).taints).toHaveLength(2);
  });

  it('reports a refused call (403) as fatal without retrying it', async () => {
    api.faults.push({ method: 'PATCH', path: /nodes/, status: 403, times: 5 });
    api.faults.push({ method: 'POST', path: /\/eviction$/, status: 403, times: 5 });
    const report = await drainer().onNotice(notice('interruption', 'terminate', 10_000), { migratedPods: ['infer/llm-0'] });
    expect(report.result).toBe('fatal');
    expect(report.steps.find((s) => s.step === 'cordon')).toMatchObject({ result: 'fatal', attempts: 1 });
    expect(report.pods.find((p) => p.name === 'frontend-7d9f-abcde')).toMatchObject({ outcome: 'failed', result: 'fatal', attempts: 1 });
    expect(calls('PATCH', /nodes/)).toHaveLength(1);
  });

  it('aborts a request the API server does not answer, and retries within the deadline', async () => {
    api.faults.push({ method: 'GET', path: /^\/api\/v1\/nodes\//, status: 200, delayMs: 3_000 });
    const started = Date.now();
    const report = await drainer({ requestTimeoutMs: 200, evict: false }).onNotice(notice('interruption', 'terminate', 10_000));
    expect(report.result).toBe('ok');
    expect(report.steps.find((s) => s.step === 'cordon')).toMatchObject({ result: 'ok', attempts: 2 });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(calls('POST', /\/eviction$/)).toHaveLength(0);
  });

  it('does nothing once the deadline has passed', async () => {
    const report = await drainer().onNotice(notice('interruption', 'terminate', -1_000));
    expect(api.requests).toHaveLength(0);
    expect(report.steps).toEqual([expect.objectContaining({ result: 'skipped' })]);
  });

  it('is idempotent: the same notice again changes nothing and records no second Event', async () => {
    const d = drainer();
    const n = notice('interruption', 'terminate', 10_000);
    const [a, b] = await Promise.all([d.onNotice(n), d.onNotice(n)]);
    expect(a).toBe(b); // one in-flight handling per notice id
    const again = await d.onNotice(n);
    expect(again.result).toBe('ok');
    expect(again.steps.find((s) => s.step === 'cordon')!.detail).toContain('already');
    expect(again.steps.find((s) => s.step === 'event')!.detail).toContain('already recorded');
    expect(calls('PATCH', /nodes/)).toHaveLength(1);
    expect(api.events.size).toBe(2);
  });
});

describe('NodeDrainer on other notices', () => {
  it('rebalance: taints without cordoning or evicting; a later interruption raises the taint, a rebalance never lowers it', async () => {
    const d = drainer();
    const r1 = await d.onNotice(notice('rebalance', 'none'));
    expect(r1).toMatchObject({ plan: 'taint', result: 'ok' });
    expect(spec(api.node(NODE)).unschedulable).toBeUndefined();
    expect(spec(api.node(NODE)).taints!.find((t) => t.key === TAINT_KEY)!.value).toBe('rebalance');
    expect(calls('POST', /\/eviction$/)).toHaveLength(0);
    expect([...api.events.values()][0]!.reason).toBe('RebalanceRecommendation');

    await d.onNotice(notice('interruption', 'terminate', 10_000), { migratedPods: ['infer/llm-0'] });
    expect(spec(api.node(NODE)).taints!.filter((t) => t.key === TAINT_KEY).map((t) => t.value)).toEqual(['interruption']);

    await d.onNotice(notice('rebalance', 'none', undefined, 'second'));
    expect(spec(api.node(NODE)).taints!.filter((t) => t.key === TAINT_KEY).map((t) => t.value)).toEqual(['interruption']);
  });

  it('maintenance that only freezes the VM records an Event and leaves the node alone', async () => {
    const report = await drainer().onNotice(notice('maintenance', 'freeze', 60_000));
    expect(report).toMatchObject({ plan: 'event', result: 'ok' });
    expect(calls('PATCH', /nodes/)).toHaveLength(0);
    expect([...api.events.values()][0]).toMatchObject({ reason: 'ScheduledMaintenance', type: 'Warning' });
  });

  it('maintenance that reboots the node drains it like an interruption', async () => {
    const report = await drainer().onNotice(notice('maintenance', 'reboot', 60_000), { migratedPods: ['infer/llm-0'] });
    expect(report.plan).toBe('drain');
    expect(spec(api.node(NODE)).taints!.find((t) => t.key === TAINT_KEY)!.value).toBe('maintenance');
  });

  it('cancelled: removes the taint and uncordons what spotwatch cordoned, keeping other taints', async () => {
    const d = drainer({ evict: false });
    await d.onNotice(notice('interruption', 'terminate', 10_000));
    const report = await d.onNotice(notice('cancelled', 'terminate'));
    expect(report).toMatchObject({ plan: 'restore', result: 'ok' });
    const node = api.node(NODE);
    expect(spec(node).unschedulable).toBe(false);
    expect(spec(node).taints).toEqual([{ key: 'nvidia.com/gpu', value: 'present', effect: 'NoSchedule' }]);
    expect(annotations(node)[CORDONED_BY_ANNOTATION]).toBeUndefined();
    expect(annotations(node)[NOTICE_ANNOTATION]).toBeUndefined();
    expect([...api.events.values()].at(-1)).toMatchObject({ reason: 'NoticeCancelled', type: 'Normal' });
  });

  it('cancelled: a node an operator had cordoned stays cordoned', async () => {
    api.addNode(NODE, { unschedulable: true });
    const d = drainer({ evict: false });
    await d.onNotice(notice('interruption', 'terminate', 10_000));
    expect(annotations(api.node(NODE))[CORDONED_BY_ANNOTATION]).toBeUndefined();
    const report = await d.onNotice(notice('cancelled', 'terminate'));
    expect(report.steps[0]!.detail).toContain('left cordoned');
    expect(spec(api.node(NODE)).unschedulable).toBe(true);
    expect(spec(api.node(NODE)).taints ?? []).toEqual([]);
  });

  it('cancelled on a clean node: nothing to undo, no patch', async () => {
    const report = await drainer().onNotice(notice('cancelled', 'terminate'));
    expect(report.result).toBe('ok');
    expect(report.steps[0]!.detail).toContain('nothing to undo');
    expect(calls('PATCH', /nodes/)).toHaveLength(0);
  });
});

describe('createNodeDrainer', () => {
  it('is off outside a pod unless asked, and reads a kubeconfig file when asked', async () => {
    expect(await createNodeDrainer({ config: loadK8sConfig({}, {}), nodeName: NODE, logger: silentLogger, env: {} })).toBeUndefined();

    const dir = mkdtempSync(join(tmpdir(), 'spotwatch-kube-'));
    try {
      const file = join(dir, 'config');
      writeFileSync(file, JSON.stringify(api.kubeconfig()));
      const env = { SPOTWATCH_K8S: 'true', KUBECONFIG: file, SPOTWATCH_K8S_EVICT: 'false', SPOTWATCH_K8S_EVENT_NAMESPACE: 'spotwatch' };
      const d = await createNodeDrainer({ config: loadK8sConfig({}, env), nodeName: NODE, logger: silentLogger, registry, env });
      expect(d).toBeInstanceOf(NodeDrainer);
      const report = await d!.onNotice(notice('interruption', 'terminate', 10_000));
      expect(report.result).toBe('ok');
      expect(calls('POST', /\/eviction$/)).toHaveLength(0);
      expect([...api.events.keys()][0]).toMatch(/^spotwatch\//);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad settings, naming each', () => {
    expect(() => loadK8sConfig({}, { SPOTWATCH_K8S: 'maybe', SPOTWATCH_K8S_DEADLINE_MARGIN_MS: '-5' })).toThrow(/--k8s \(from SPOTWATCH_K8S\)[\s\S]*--k8s-deadline-margin \(from SPOTWATCH_K8S_DEADLINE_MARGIN_MS\)/);
  });
});
