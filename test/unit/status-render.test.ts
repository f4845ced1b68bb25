import { describe, expect, it } from 'vitest';
import { drainingCell, progressBar, renderStatus, span } from '../../src/cli/status-command.js';
import type { MigrationRecord, NodeState, TaskRecord } from '../../src/registry/types.js';

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
    const node: NodeState & { reserved: number } = {
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
    const staged: MigrationRecord = { ...finished, id: 'm-2', taskId: 'decoder', bytesSent: 2300 * MiB, stagedBytes: 4100 * MiB };
    const pulled: MigrationRecord = { ...finished, id: 'm-3', taskId: 'postcopy', bytesSent: 260 * MiB, postCopyBytes: 256 * MiB, dataPath: 'post-copy' };
    const text = renderStatus([node], [task], [inflight, finished, staged, pulled], now);
    expect(text).toMatch(/node-b\s+healthy\s+no\s+on-demand\s+p5\/us-east-1b\s+32\.0 GiB\s+256 MiB\s+8× NVIDIA H100 80GB HBM3 \(600\.0 GiB free\)\s+1\.5 s ago/);
    expect(text).toMatch(/decode-0\s+node-a\s+4242\s+migrating\s+512 MiB\s+16\.0 GiB\s+10\s+stop/);
    expect(text).toMatch(/m-1\s+decode-0\s+node-a → node-b\s+transferring\s+\[#####---------------\] 25% 250 MiB\/1000 MiB\s+2\.00 s\s+110\.0 s/);
    expect(text).toMatch(/m-0\s+toy\s+node-a → node-b\s+migrated\s+0\.71 s\s+3\.00 s\s+118\.0 s\s+266 MiB\s+restored on node-b as pid 99/);
    expect(text).toMatch(/m-2\s+decoder\s+node-a → node-b\s+migrated\s+.*2\.2 GiB \+4\.0 GiB staged\s+restored/);
    expect(text).toMatch(/m-3\s+postcopy\s+node-a → node-b\s+migrated\s+.*4 MiB \+256 MiB pulled\s+restored/);
  });

  it('says why and until when a node is draining: its notice and the deadline, or since when', () => {
    const now = Date.parse('2026-11-25T12:00:00Z');
    const base: NodeState = {
      id: 'node-a', provider: 'aws', instanceId: 'i-0a', zone: 'us-east-1a', capacityPool: 'p5/us-east-1a', lifecycle: 'spot',
      memTotalBytes: 64 * 1024 * MiB, memFreeBytes: 32 * 1024 * MiB, gpuModel: '', gpuCount: 0, gpuFreeBytes: 0,
      draining: true, noticeId: 'aws-8c35525c245ccd942831240a', peerAddress: '10.0.0.1:7070', heartbeatAt: now - 500, healthy: true,
    };
    const drain = { noticeId: base.noticeId, since: now - 48_000, deadline: now + 72_000, instanceId: 'i-0a' };
    expect(drainingCell({ ...base, drain }, now)).toBe('yes (aws-8c35525c245ccd942831240a, deadline in 1m12s)');
    expect(drainingCell({ ...base, drain: { ...drain, deadline: now - 185_000 } }, now)).toBe('yes (aws-8c35525c245ccd942831240a, deadline 3m05s ago)');
    expect(drainingCell({ ...base, drain: { ...drain, deadline: undefined } }, now)).toBe('yes (aws-8c35525c245ccd942831240a, since 48s)');
    // A node id reused by another machine: the drain names the old instance (the agent lifts it on its next tick).
    expect(drainingCell({ ...base, drain: { ...drain, instanceId: 'i-0old' } }, now)).toBe('yes (aws-8c35525c245ccd942831240a, for i-0old, deadline in 1m12s)');
    // Set by an older spotwatch: only the notice id is known.
    expect(drainingCell({ ...base, drain: { noticeId: base.noticeId } }, now)).toBe('yes (aws-8c35525c245ccd942831240a)');
    expect(drainingCell({ ...base, draining: false, noticeId: '' }, now)).toBe('no');
    expect([span(0), span(59_400), span(60_000), span(7_500_000)]).toEqual(['0s', '59s', '1m00s', '2h05m']);

    const text = renderStatus([{ ...base, drain, reserved: 0 }], [], [], now);
    expect(text).toMatch(/node-a\s+healthy\s+yes \(aws-8c35525c245ccd942831240a, deadline in 1m12s\)\s+spot\s+p5\/us-east-1a\s+32\.0 GiB\s+0 MiB\s+—\s+0\.5 s ago/);
  });
});
