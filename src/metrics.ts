import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every Prometheus metric spotwatch exports, on its own registry (one per agent or webhook process, so
 * tests can run several side by side). Names are documented in the README's metrics table.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly noticesTotal = new Counter({
    name: 'spotwatch_notices_total',
    help: 'Notices detected, by provider, kind and source (counted once per notice id per process).',
    labelNames: ['provider', 'kind', 'source'] as const,
    registers: [this.registry],
  });

  readonly enqueueTotal = new Counter({
    name: 'spotwatch_enqueue_total',
    help: 'Enqueue attempts by result: created (new job), duplicate (job id already present), stale (an interruption episode older than the latest one of its instance, not stored), spooled (Redis unreachable, kept on disk), failed.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly noticeEpisodesTotal = new Counter({
    name: 'spotwatch_notice_episodes_total',
    help: 'New interruption episodes recognized: a notice whose id an earlier interruption of the same instance already used (a stopped or hibernated instance started again and interrupted again), stored as <id>~<n>, by provider.',
    labelNames: ['provider'] as const,
    registers: [this.registry],
  });

  readonly drainReleasedTotal = new Counter({
    name: 'spotwatch_drain_released_total',
    help: 'Drains lifted by a node that came back after its notice (the notice is over): rebooted (a stopped or preempted instance started again), resumed (from hibernation), other-instance (the node id now belongs to another machine).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly noticePlansTotal = new Counter({
    name: 'spotwatch_notice_plans_total',
    help: 'Notices planned, by decision: migrate, ignore, cancel, unknown-node (no node registered for the instance, or its record is gone), instance-replaced (a late notice for an instance whose node id another machine now uses: nothing drained or migrated).',
    labelNames: ['decision'] as const,
    registers: [this.registry],
  });

  readonly detectionToEnqueueSeconds = new Histogram({
    name: 'spotwatch_detection_to_enqueue_seconds',
    help: 'Time from detecting a notice to its job being durably stored in Redis.',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly metadataRequestsTotal = new Counter({
    name: 'spotwatch_metadata_requests_total',
    help: 'Requests made to the metadata service, by provider and path.',
    labelNames: ['provider', 'path'] as const,
    registers: [this.registry],
  });

  readonly metadataErrorsTotal = new Counter({
    name: 'spotwatch_metadata_errors_total',
    help: 'Metadata requests that failed, by provider and reason (timeout, http_5xx, http_429, http_401, connection, other).',
    labelNames: ['provider', 'reason'] as const,
    registers: [this.registry],
  });

  readonly metadataLastSuccess = new Gauge({
    name: 'spotwatch_metadata_last_success_timestamp_seconds',
    help: 'Unix time of the last metadata poll that returned a usable answer.',
    labelNames: ['provider'] as const,
    registers: [this.registry],
  });

  readonly spoolDepth = new Gauge({
    name: 'spotwatch_spool_depth',
    help: 'Notices waiting in the local spool file for Redis to come back.',
    registers: [this.registry],
  });

  readonly deadlineBudgetUsedRatio = new Histogram({
    name: 'spotwatch_deadline_budget_used_ratio',
    help: 'Share of the notice window (detection to deadline) used by a step when it finished, by step.',
    labelNames: ['step'] as const,
    buckets: [0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1],
    registers: [this.registry],
  });

  readonly migrationsTotal = new Counter({
    name: 'spotwatch_migrations_total',
    help: 'Migrations finished, by outcome (migrated, fallback, fallback-applied, failed, restore-failed) and reason code.',
    labelNames: ['outcome', 'reason'] as const,
    registers: [this.registry],
  });

  readonly migrationPhaseSeconds = new Histogram({
    name: 'spotwatch_migration_phase_seconds',
    help: 'Duration of each migration phase (source.* on the source, target.* on the target).',
    labelNames: ['phase'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120],
    registers: [this.registry],
  });

  readonly taskDowntimeSeconds = new Histogram({
    name: 'spotwatch_task_downtime_seconds',
    help: 'Task downtime: frozen on the source to running on the target.',
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120],
    registers: [this.registry],
  });

  readonly taskStagesTotal = new Counter({
    name: 'spotwatch_task_stages_total',
    help: 'Stagings of a task ahead of its checkpoint (spotwatch run --stage-url), by outcome: delivered (the target holds the files), stage-failed (the task did not stage in time), send-failed (the files did not reach the target); the checkpoint moves everything when not delivered.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly bytesMovedTotal = new Counter({
    name: 'spotwatch_migration_bytes_total',
    help: 'Checkpoint image bytes (and staged files) streamed from this node to targets.',
    registers: [this.registry],
  });

  readonly deadlineMarginSeconds = new Histogram({
    name: 'spotwatch_deadline_margin_seconds',
    help: 'Time left before the notice deadline when a migration finished (negative: late).',
    buckets: [-10, 0, 1, 5, 10, 20, 30, 60, 90, 120],
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    // A coarse event-loop monitor: the default 10 ms sampling alone costs an idle agent ~0.4 % CPU.
    if (options.defaultMetrics)
      collectDefaultMetrics({ register: this.registry, prefix: 'spotwatch_process_', eventLoopMonitoringPrecision: 200 });
  }
}
