/**
 * The agent acting on its Kubernetes node: a real `spotwatch agent` process with SPOTWATCH_K8S=true and a
 * kubeconfig for a local server that speaks the Kubernetes API wire format (src/k8s/fake-apiserver.ts). On a
 * spot interruption it cordons and taints its node, records an Event, and evicts the pods whose task is not
 * migrating — never the pod of a task spotwatch is taking care of.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { LocalCluster } from '../../src/dev/local-cluster.js';
import { FakeKubeApiServer } from '../../src/k8s/fake-apiserver.js';
import { TAINT_KEY } from '../../src/k8s/node-drainer.js';
import { waitFor } from '../support/agent-harness.js';
import { runCli } from '../support/spawn-cli.js';
import { makeNotice } from '../../src/notice.js';
import { BullmqNoticeQueue } from '../../src/queue/bullmq-notice-queue.js';

const redisUrl = inject('redisUrl');
const entry = fileURLToPath(new URL('../../src/cli/run.ts', import.meta.url));

describe('agent + Kubernetes API', () => {
  let cluster: LocalCluster | undefined;
  let api: FakeKubeApiServer | undefined;
  let sleeper: number | undefined;
  afterEach(async () => {
    try {
      if (sleeper) process.kill(sleeper, 'SIGKILL');
    } catch {
      // already ended with its cluster
    }
    sleeper = undefined;
    await cluster?.close();
    await api?.stop();
  });

  it('cordons, taints, records an Event and evicts only the pods that are not migrating', async () => {
    api = new FakeKubeApiServer();
    await api.start();
    api.addNode('node-a');
    api.addPod({ namespace: 'inference', name: 'decode-0', nodeName: 'node-a' });
    api.addPod({ namespace: 'inference', name: 'batch-7', nodeName: 'node-a' });
    cluster = new LocalCluster({ redisUrl, cli: { command: process.execPath, args: ['--import', 'tsx', entry] } });
    const kubeconfig = join(cluster.dir, 'kubeconfig.json');
    writeFileSync(kubeconfig, JSON.stringify(api.kubeconfig()));
    await cluster.startNode('node-a', { extraArgs: ['--k8s', 'true', '--kubeconfig', kubeconfig] });
    const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    child.unref();
    sleeper = child.pid!;
    const registered = await runCli(['run', '--pid', String(sleeper), '--id', 'decode-0', '--node-id', 'node-a', '--pod', 'inference/decode-0', '--fallback', 'none'], {
      env: { REDIS_URL: redisUrl, SPOTWATCH_QUEUE_PREFIX: cluster.prefix },
    });
    expect(registered.code, registered.stderr).toBe(0);
    await cluster.interrupt('node-a');
    await waitFor('the Kubernetes actions', 15_000, () => (cluster!.nodes.get('node-a')!.log().includes('Kubernetes actions done') ? true : undefined));
    const node = api.node('node-a') as { spec: { unschedulable?: boolean; taints?: { key: string; value: string; effect: string }[] } };
    expect(node.spec.unschedulable).toBe(true);
    expect(node.spec.taints).toEqual([expect.objectContaining({ key: TAINT_KEY, value: 'interruption', effect: 'NoSchedule' })]);
    expect([...api.events.values()].length).toBeGreaterThan(0);
    const evictions = api.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/eviction')).map((r) => r.path);
    expect(evictions).toEqual(['/api/v1/namespaces/inference/pods/batch-7/eviction']);
    expect(api.unexpected).toEqual([]);
  });

  it('acts on a notice about its node that came through the webhook, not its own watcher', async () => {
    api = new FakeKubeApiServer();
    await api.start();
    api.addNode('node-a');
    api.addPod({ namespace: 'batch', name: 'job-1', nodeName: 'node-a' });
    cluster = new LocalCluster({ redisUrl, cli: { command: process.execPath, args: ['--import', 'tsx', entry] } });
    const kubeconfig = join(cluster.dir, 'kubeconfig.json');
    writeFileSync(kubeconfig, JSON.stringify(api.kubeconfig()));
    await cluster.startNode('node-a', { extraArgs: ['--k8s', 'true', '--kubeconfig', kubeconfig] });
    const node = await waitFor('node-a in the registry', 5000, () => cluster!.registry.getNode('node-a'));
    // What the webhook stores for an EventBridge spot warning about this instance.
    const notice = makeNotice({ provider: 'aws', kind: 'interruption', action: 'terminate', instanceId: node.instanceId, deadline: new Date(Date.now() + 120_000), detectedAt: new Date(), source: 'eventbridge', identity: 'interruption-episode' });
    const queue = new BullmqNoticeQueue({ redisUrl, prefix: cluster.prefix });
    try {
      expect(await queue.enqueue(notice)).toBe('created');
    } finally {
      await queue.close();
    }
    await waitFor('the Kubernetes actions', 15_000, () => (cluster!.nodes.get('node-a')!.log().includes('Kubernetes actions done') ? true : undefined));
    expect((api.node('node-a') as { spec: { unschedulable?: boolean } }).spec.unschedulable).toBe(true);
    expect(api.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/eviction')).map((r) => r.path)).toEqual(['/api/v1/namespaces/batch/pods/job-1/eviction']);
  });
});
