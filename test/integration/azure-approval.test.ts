import { afterEach, describe, expect, inject, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Agent } from '../../src/agent/agent.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { Registry } from '../../src/registry/registry.js';
import { azureProvider } from '../../providers/azure/index.js';
import { waitFor } from '../support/agent-harness.js';

const redisUrl = inject('redisUrl');

describe('Azure: approve the scheduled event once the node is drained', () => {
  let agent: Agent | undefined;
  let emulator: EmulatorHandle | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await agent?.stop();
    await emulator?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('plans the Preempt notice, drains the node, and only then POSTs StartRequests for its EventId', async () => {
    emulator = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0 });
    dir = mkdtempSync(join(tmpdir(), 'azure-approval-'));
    const prefix = `az${randomBytes(3).toString('hex')}`;
    const { config } = loadConfig(
      {
        provider: 'azure', metadataEndpoint: emulator.url, redisUrl, queuePrefix: prefix, nodeId: 'az-node', httpHost: '127.0.0.1', httpPort: '0',
        pollIntervalMs: '100', spoolPath: join(dir, 'spool'), logLevel: 'silent', clusterToken: 'azure-approval-test-token', peerHost: '127.0.0.1',
        peerPort: '0', advertiseHost: '127.0.0.1', imageDir: join(dir, 'images'), storageDir: join(dir, 'storage'), heartbeatMs: '300',
      },
      {},
      'agent',
    );
    agent = new Agent({ config, provider: azureProvider, endpoint: emulator.url, logger: silentLogger });
    await agent.start();
    const scheduled = (await (await fetch(`${emulator.controlUrl}/schedule`, { method: 'POST', body: JSON.stringify({ type: 'Preempt', notBeforeIn: 30 }) })).json()) as { eventId: string };
    const state = await waitFor('the approval', 10_000, async () => {
      const s = (await (await fetch(`${emulator!.controlUrl}/state`, { method: 'POST', body: '{}' })).json()) as { approvals: { eventId: string }[] };
      return s.approvals.length > 0 ? s : undefined;
    });
    expect(state.approvals.map((a) => a.eventId)).toEqual([scheduled.eventId]);
    const registry = new Registry(redisUrl, prefix);
    try {
      const node = await registry.getNode('az-node');
      expect(node?.draining).toBe(true);
      expect(node?.noticeId).toMatch(/^azure-/);
    } finally {
      await registry.close();
    }
  });
});
