import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Agent } from '../../src/agent/agent.js';
import { gcpProvider } from '../../providers/gcp/index.js';
import { gcpParsers } from '../../providers/gcp/parsers.js';
import { agentHarness, waitFor, type AgentHarness } from '../support/agent-harness.js';

/** The agent on GCP: emulator → hanging GET → notice → job in a real Redis. */

const redisUrl = inject('redisUrl');
const INSTANCE = '4520031799277581759';

let harness: AgentHarness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

async function start(): Promise<{ harness: AgentHarness; agent: Agent }> {
  harness = await agentHarness(gcpProvider, redisUrl, { config: { nodeId: 'gcp-node', requestTimeoutMs: '500' } });
  return { harness, agent: await harness.startAgent() };
}

describe('agent + GCP emulator + Redis', () => {
  it('turns preempted=TRUE into exactly one job within milliseconds, with the id the Pub/Sub path would give', async () => {
    const { harness, agent } = await start();
    expect(agent.identity).toMatchObject({ provider: 'gcp', instanceId: INSTANCE, lifecycle: 'spot' });
    await waitFor('hanging GETs parked', 2000, async () => ((await harness.control('state')).waiting === 2 ? true : undefined));
    const changedAt = Date.now();
    await harness.control('preempt');
    const [job] = await waitFor('the job', 2000, async () => {
      const jobs = await harness.jobs();
      return jobs.length > 0 ? jobs : undefined;
    });
    expect(job!.timestamp - changedAt).toBeLessThan(500);
    expect(job!.data).toMatchObject({ provider: 'gcp', kind: 'interruption', action: 'terminate', instanceId: INSTANCE, source: 'imds' });
    const [viaPubsub] = gcpParsers.pubsub!(
      JSON.stringify({
        message: {
          messageId: '1',
          data: Buffer.from(
            JSON.stringify({
              protoPayload: { methodName: 'compute.instances.preempted', resourceName: 'projects/p/zones/us-central1-a/instances/spotwatch-gpu-1' },
              resource: { type: 'gce_instance', labels: { instance_id: INSTANCE } },
              timestamp: new Date().toISOString(),
            }),
          ).toString('base64'),
        },
      }),
      { now: new Date() },
    );
    expect(job!.id).toBe(viaPubsub!.id);
    await new Promise((r) => setTimeout(r, 200));
    expect(await harness.jobs()).toHaveLength(1);
  });
});
