import type { TaskControl } from '../engines/checkpoint-engine.js';
import type { Lifecycle } from '../provider.js';

/** A node as its agent last described it (heartbeat). Healthy = its heartbeat key has not expired. */
export interface NodeRecord {
  id: string;
  provider: string;
  instanceId: string;
  zone: string;
  /** Where capacity is reclaimed together (AWS: instance type + zone); a target in another pool is preferred. */
  capacityPool: string;
  lifecycle: Lifecycle;
  memTotalBytes: number;
  memFreeBytes: number;
  gpuModel: string;
  gpuCount: number;
  gpuFreeBytes: number;
  draining: boolean;
  /** The notice this node is under, if any. */
  noticeId: string;
  /** host:port of the agent's peer server (image streams arrive there). */
  peerAddress: string;
  heartbeatAt: number;
}

export const TASK_STATES = ['running', 'migrating', 'checkpointed', 'stopped', 'lost', 'failed', 'exited'] as const;
export type TaskRunState = (typeof TASK_STATES)[number];

export const FALLBACKS = ['checkpoint-to-storage', 'stop', 'none'] as const;
export type Fallback = (typeof FALLBACKS)[number];

export interface TaskRecord {
  id: string;
  nodeId: string;
  pid: number;
  engine: string;
  /** Host memory of the task tree (bytes), refreshed by its agent. */
  memBytes: number;
  /** Device memory the task holds (bytes); 0 for a CPU task. */
  gpuMemBytes: number;
  gpuModel: string;
  priority: number;
  fallback: Fallback;
  state: TaskRunState;
  command: string[];
  /** Where the task's stdout/stderr go (kept open across migrations). */
  logPath: string;
  /** `namespace/name` of the Kubernetes pod the task runs in, if any (never evicted while migrating). */
  pod?: string;
  /** The task's own prepare/resume endpoints, when it cooperates with its checkpoints (`spotwatch run --prepare-url`). */
  control?: TaskControl;
  startedAt: number;
  updatedAt: number;
  migrations: number;
  lastMigrationId: string;
}

export const MIGRATION_PHASES = ['planned', 'checkpointing', 'transferring', 'restoring', 'done', 'failed', 'fallback'] as const;
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];

export type MigrationOutcome = 'migrated' | 'fallback-applied' | 'failed' | 'skipped';

export interface MigrationRecord {
  id: string;
  noticeId: string;
  taskId: string;
  sourceNodeId: string;
  targetNodeId: string;
  reservationId: string;
  phase: MigrationPhase;
  outcome?: MigrationOutcome | undefined;
  /** Why: for fallbacks and failures a stable reason code and a sentence. */
  reason?: string | undefined;
  fallback?: Fallback | undefined;
  deadline?: number | undefined;
  estimatedMs: number;
  estimatedBytes: number;
  bytesSent: number;
  /** Bytes the task staged and the target received ahead of the freeze (task-stage.ts), when it staged. */
  stagedBytes?: number | undefined;
  /** Post-copy from the source: bytes the target pulled after the task ran there (also counted in bytesSent). */
  postCopyBytes?: number | undefined;
  /** How the checkpoint's bulk travelled, in the engine's words (e.g. `direct channel (native pump)`). */
  dataPath?: string | undefined;
  plannedAt: number;
  frozenAt?: number | undefined;
  restoredAt?: number | undefined;
  finishedAt?: number | undefined;
  /** Phase durations in ms (checkpoint engine phases plus `receive`, `restore`). */
  phases: Record<string, number>;
  downtimeMs?: number | undefined;
  /** Deadline minus finish time (positive: made it with that much to spare). */
  marginMs?: number | undefined;
  targetsTried: string[];
  newPid?: number | undefined;
}

/** What drained a node: recorded with the flag so a node that comes back can tell a stale drain from a live one. */
export interface DrainCause {
  /** The instance the notice was about. */
  instanceId: string;
  /** The notice's deadline (ms since the epoch), when the cloud gave one. */
  deadline?: number | undefined;
  /** When the node was drained (ms since the epoch; default now). Kept from the first time for the same notice. */
  at?: number | undefined;
}

/** What drains a node, as recorded with the flag (fields the planner set; absent where it did not record them). */
export interface NodeDrain {
  noticeId: string;
  /** When the notice first drained the node (ms since the epoch, the planner's clock). */
  since?: number | undefined;
  /** The notice's deadline (ms since the epoch), when the cloud gave one. */
  deadline?: number | undefined;
  /** The instance the notice was about (another one than the node's own: a node id reused by a new machine). */
  instanceId?: string | undefined;
}

/** A node as read from the registry: its record, whether its heartbeat is live, and its drain, if draining. */
export type NodeState = NodeRecord & { healthy: boolean; drain?: NodeDrain | undefined };

/**
 * The answer of {@link Registry.setDraining}. `set`: the flag was written. With a guard (the node must run a
 * given instance), `other-instance`: the node's record names another instance (`instanceId`; the node id now
 * belongs to another machine) and nothing was written; `missing`: the node has no record, nothing was written.
 */
export type DrainWriteResult = { verdict: 'set' } | { verdict: 'other-instance'; instanceId: string } | { verdict: 'missing' };

/**
 * The answer of {@link Registry.releaseStaleDrain}. `cleared`: the flag was lifted (`over`: the interruption
 * happened before this machine's current run began; `other-instance`: the notice named another instance).
 * `kept`: the node stays draining (`current`: drained during this run; `deadline-ahead`: drained earlier but its
 * deadline is still to come; `unknown`: drained by an older spotwatch that did not record when).
 */
export type StaleDrainResult =
  | { verdict: 'none' }
  | { verdict: 'cleared'; noticeId: string; reason: 'over' | 'other-instance'; drainingSince?: number; deadline?: number; instanceId: string }
  | { verdict: 'kept'; noticeId: string; reason: 'current' | 'deadline-ahead' | 'unknown'; drainingSince?: number; deadline?: number; instanceId: string };
