import type { Registry } from 'prom-client';
import { z } from 'zod';
import { boolString, intString, loadOptionTable, type OptionSpec } from '../config.js';
import type { Logger } from '../logger.js';
import { K8sMetrics } from './metrics.js';
import type { NodeDrainer } from './node-drainer.js';

/**
 * The agent's Kubernetes settings, in the shape of CONFIG_OPTIONS (flag, environment, default), so they can
 * join the agent's configuration table. The Helm chart and the plain manifests set these variables.
 */
export const K8S_OPTIONS = {
  k8sActions: {
    flag: '--k8s',
    env: ['SPOTWATCH_K8S'],
    default: 'auto',
    description: 'Cordon, taint, record an Event and evict pods on a notice: true, false, or auto (on when running in a pod).',
  },
  k8sEvict: { flag: '--k8s-evict', env: ['SPOTWATCH_K8S_EVICT'], default: 'true', description: 'Evict the pods that were not migrated (Eviction API; PodDisruptionBudgets hold).' },
  k8sEventNamespace: { flag: '--k8s-event-namespace', env: ['SPOTWATCH_K8S_EVENT_NAMESPACE'], default: 'default', description: 'Namespace of the Events recorded on the node.' },
  k8sDeadlineMarginMs: {
    flag: '--k8s-deadline-margin',
    env: ['SPOTWATCH_K8S_DEADLINE_MARGIN_MS'],
    default: '2000',
    description: 'Stop Kubernetes actions this many milliseconds before the notice deadline.',
  },
  k8sNoDeadlineBudgetMs: {
    flag: '--k8s-no-deadline-budget',
    env: ['SPOTWATCH_K8S_NO_DEADLINE_BUDGET_MS'],
    default: '120000',
    description: 'Time allowed for Kubernetes actions on a notice without a deadline, in milliseconds.',
  },
  kubeconfig: { flag: '--kubeconfig', env: ['KUBECONFIG'], description: 'Kubeconfig file, outside a pod (in a pod: the service account).' },
} as const satisfies Record<string, OptionSpec>;

export type K8sOptionKey = keyof typeof K8S_OPTIONS;

const schema = z.object({
  k8sActions: z.enum(['auto', 'true', 'false']),
  k8sEvict: boolString,
  k8sEventNamespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a namespace name').max(63),
  k8sDeadlineMarginMs: intString(0, 60_000),
  k8sNoDeadlineBudgetMs: intString(1_000, 3_600_000),
  kubeconfig: z.string().min(1).optional(),
});

export type K8sConfig = z.infer<typeof schema>;

/**
 * Explicit option, then the environment, then the default; all problems reported at once, in the same
 * words as every other option table (`loadOptionTable`).
 */
export function loadK8sConfig(options: Partial<Record<K8sOptionKey, string>>, env: NodeJS.ProcessEnv = process.env): K8sConfig {
  return loadOptionTable(K8S_OPTIONS, schema, options, env).config;
}

/** Whether the agent should act on the cluster: `auto` means it runs in a pod. */
export function k8sEnabled(config: K8sConfig, env: NodeJS.ProcessEnv = process.env): boolean {
  return config.k8sActions === 'true' || (config.k8sActions === 'auto' && Boolean(env.KUBERNETES_SERVICE_HOST));
}

/**
 * The agent's NodeDrainer, or undefined when Kubernetes actions are off. `nodeName` is the agent's node id
 * (NODE_NAME from the downward API in the DaemonSet).
 */
export async function createNodeDrainer(args: {
  config: K8sConfig;
  nodeName: string;
  logger: Logger;
  registry?: Registry;
  env?: NodeJS.ProcessEnv;
}): Promise<NodeDrainer | undefined> {
  const env = args.env ?? process.env;
  if (!k8sEnabled(args.config, env)) return undefined;
  // The Kubernetes client (several MB) loads only where the actions are on: off the cluster it costs nothing.
  const [{ loadKubeConfig }, { NodeDrainer }] = await Promise.all([import('./kube-api.js'), import('./node-drainer.js')]);
  const kubeConfig = loadKubeConfig(env, args.config.kubeconfig);
  return NodeDrainer.fromKubeConfig(kubeConfig, {
    nodeName: args.nodeName,
    logger: args.logger,
    metrics: args.registry ? new K8sMetrics(args.registry) : undefined,
    eventNamespace: args.config.k8sEventNamespace,
    evict: args.config.k8sEvict,
    deadlineMarginMs: args.config.k8sDeadlineMarginMs,
    noDeadlineBudgetMs: args.config.k8sNoDeadlineBudgetMs,
  });
}
