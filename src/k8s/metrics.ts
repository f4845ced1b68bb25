import { Counter, Histogram, type Registry } from 'prom-client';

/**
 * Metrics of the Kubernetes actions (NodeDrainer), registered on the agent's registry so they are served on
 * its /metrics next to the others.
 */
export class K8sMetrics {
  readonly actionsTotal: Counter<'action' | 'result'>;
  readonly evictionsTotal: Counter<'outcome'>;
  readonly drainSeconds: Histogram<'kind' | 'result'>;

  constructor(registry: Registry) {
    this.actionsTotal = new Counter({
      name: 'spotwatch_k8s_actions_total',
      help: 'Kubernetes actions on the node, by action (cordon, taint, event, uncordon) and result (ok, retryable, fatal, skipped).',
      labelNames: ['action', 'result'] as const,
      registers: [registry],
    });
    this.evictionsTotal = new Counter({
      name: 'spotwatch_k8s_evictions_total',
      help: 'Pods handled on a notice, by outcome: evicted, gone (already deleted), blocked (a PodDisruptionBudget refused until the deadline), failed, skipped_migrated, skipped_daemonset, skipped_mirror, skipped_finished.',
      labelNames: ['outcome'] as const,
      registers: [registry],
    });
    this.drainSeconds = new Histogram({
      name: 'spotwatch_k8s_drain_seconds',
      help: 'Time from a notice reaching the drainer to the last Kubernetes action finishing, by notice kind and overall result.',
      labelNames: ['kind', 'result'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120],
      registers: [registry],
    });
  }
}
