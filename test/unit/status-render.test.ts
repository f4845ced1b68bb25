import { describe, expect, it } from 'vitest';
import { progressBar, renderStatus } from '../../src/cli/status-command.js';
import type { MigrationRecord, NodeRecord, TaskRecord } from '../../src/registry/types.js';

const MiB = 1024 * 1024;

describe('spotwatch status', () => {
  it('draws progress as bytes sent of the estimate', () => {
    expect(progressBar(0, 100, 10)).toBe('[----------] 0%');
    expect(progressBar(52, 100, 10)).toBe('[#####-----] 52%');
    expect(progressBar(300, 100, 10)).toBe('[##########] 100%');
    expect(progressBar(5, 0, 4)).toBe('[----] 0%');
  });

  it('shows nodes, tasks, migrations in flight with phase and progress, and finished ones with timings', () => {
    const now = Date.parse('2026-11-25T12:00:10Z');
    const node: NodeRecord & { healthy: boolean; reserved: number } = {
      id: 'node-b', provider: 'aws', instanceId: 'i-0b', zone: 'us-east-1b', capacityPool: 'p5/us-east-1b', lifecycle: 'on-demand',
      memTotalBytes: 64 * 1024 * MiB, memFreeBytes: 32 * 1024 * MiB, gpuModel: 'NVIDIA H100 80GB HBM3', gpuCount: 8, gpuFreeBytes: 600 * 1024 * MiB,
      draining: false, noticeId: '', peerAddress: '10.0.0.2:7070', heartbeatAt: now - 1500, healthy: true, reserved: 256 * MiB,
    };
    const task: TaskRecord = {
      id: 'decode-0', nodeId: 'node-a', pid: 4242, engine: 'criu', memBytes: 512 * MiB, gpuMemBytes: 16 * 1024 * MiB, gpuModel: 'NVIDIA H100 80GB HBM3',
      priority: 10, fallback: 'stop', state: 'migrating', command: ['python3', 'serve.py'], logPath: '', startedAt: now - 60_000, updatedAt: now, migrations: 0, lastMigrationId: 'm-1',
    };
    const inflight: MigrationRecord = {
      id: 'm-1', noticeId: 'aws-x', taskId: 'decode-0', sourceNodeId: 'node-a', targetNodeId: 'node-b', reservationId: 'r', phase: 'transferring',
      deadline: now + 110_000, estimatedMs: 9000, estimatedBytes: 1000 * MiB, bytesSent: 250 * MiB, plannedAt: now - 2000, phases: {}, targetsTried: ['node-b'],
    };
    const finished: MigrationRecord = {
      ...inflight, id: 'm-0', taskId: 'toy', phase: 'done', outcome: 'migrated', reason: 'restored on node-b as pid 99', bytesSent: 266 * MiB,
      downtimeMs: 705, finishedAt: now - 1000, plannedAt: now - 4000, marginMs: 118_000,
    };
    const text = renderStatus([node], [task], [inflight, finished], now);
    expect(text).toMatch(/node-b\s+healthy\s+no\s+on-demand\s+p5\/us-east-1b\s+32\.0 GiB\s+256 MiB\s+8× NVIDIA H100 80GB HBM3 \(600\.0 GiB free\)\s+1\.5 s ago/);
    expect(text).toMatch(/decode-0\s+node-a\s+4242\s+migrating\s+512 MiB\s+16\.0 GiB\s+10\s+stop/);
    expect(text).toMatch(/m-1\s+decode-0\s+node-a → node-b\s+transferring\s+\[#####---------------\] 25% 250 MiB\/1000 MiB\s+2\.00 s\s+110\.0 s/);
    expect(text).toMatch(/m-0\s+toy\s+node-a → node-b\s+migrated\s+0\.71 s\s+3\.00 s\s+118\.0 s\s+266 MiB\s+restored on node-b as pid 99/);
  });
});
