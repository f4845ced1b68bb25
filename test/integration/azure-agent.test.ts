import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Agent } from '../../src/agent/agent.js';
import { azureProvider } from '../../providers/azure/index.js';
import { agentHarness, waitFor, type AgentHarness } from '../support/agent-harness.js';

/** The agent on Azure: emulator → Scheduled Events poll → notice → job in a real Redis. */

const redisUrl = inject('redisUrl');
const VM = 'vmss_3';
const POLL_MS = 100;

let harness: AgentHarness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

async function start(): Promise<{ harness: AgentHarness; agent: Agent }> {
  harness = await agentHarness(azureProvider, redisUrl, { emulator: { instanceId: VM }, config: { nodeId: 'azure-node', pollIntervalMs: String(POLL_MS) } });
  return { harness, agent: await harness.startAgent() };
}

describe('agent + Azure emulator + Redis', () => {
  it('one job per scheduled event of this VM, within a poll interval; Started keeps it one job; broadcasts give none', async () => {
    const { harness, agent } = await start();
    expect(agent.identity).toMatchObject({ provider: 'azure', instanceId: VM, lifecycle: 'spot' });
    await harness.control('schedule', { type: 'Reboot', resources: 'vmss_5,vmss_6', eventId: 'OTHER' });
    const scheduledAt = Date.now();
    await harness.control('schedule', { type: 'Preempt', resources: 'vmss_3,vmss_4', eventId: 'EV1', notBeforeIn: 30 });
    const [job] = await waitFor('the job', 2000, async () => {
      const jobs = await harness.jobs();
      return jobs.length > 0 ? jobs : undefined;
    });
    expect(job!.timestamp - scheduledAt).toBeLessThanOrEqual(POLL_MS + 100);
    expect(job!.data).toMatchObject({ provider: 'azure', kind: 'interruption', action: 'terminate', instanceId: VM, source: 'imds', eventId: 'EV1' });
    await harness.control('start', { eventId: 'EV1' });
    await new Promise((r) => setTimeout(r, 5 * POLL_MS));
    const jobs = await harness.jobs();
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.id).toBe(job!.id);
  });
});
