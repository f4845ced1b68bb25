import type { NodeRecord, TaskRecord } from '../../src/registry/types.js';

const GiB = 1024 ** 3;

/**
 * A node record as an agent heartbeats it: an AWS spot node `id` running instance `i-<id>` in us-east-1a with
 * 32 of 64 GiB free, no GPU, not draining. `extra` overrides any field.
 */
export function nodeRecord(id: string, extra: Partial<NodeRecord> = {}): NodeRecord {
  return {
    id,
    provider: 'aws',
    instanceId: `i-${id}`,
    zone: 'us-east-1a',
    capacityPool: 'p5.48xlarge/us-east-1a',
    lifecycle: 'spot',
    memTotalBytes: 64 * GiB,
    memFreeBytes: 32 * GiB,
    gpuModel: '',
    gpuCount: 0,
    gpuFreeBytes: 0,
    draining: false,
    noticeId: '',
    peerAddress: '127.0.0.1:1',
    heartbeatAt: Date.now(),
    ...extra,
  };
}

/** A running CPU task `id` of 1 GiB on `nodeId` (CRIU, priority 0, fallback checkpoint-to-storage). */
export function taskRecord(id: string, nodeId: string, extra: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id,
    nodeId,
    pid: 1000,
    engine: 'criu',
    memBytes: GiB,
    gpuMemBytes: 0,
    gpuModel: '',
    priority: 0,
    fallback: 'checkpoint-to-storage',
    state: 'running',
    command: ['toy'],
    logPath: '',
    startedAt: Date.now(),
    updatedAt: Date.now(),
    migrations: 0,
    lastMigrationId: '',
    ...extra,
  };
}
