/**
 * Kubernetes actions of the agent on its own node (cordon, taint, Event, PDB-respecting eviction; undone on
 * `cancelled`). Wiring in the agent:
 *
 *   const drainer = await createNodeDrainer({ config: loadK8sConfig(flags), nodeName: agent.nodeId, logger, registry: agent.metrics.registry });
 *   // for each notice about THIS node (its own watcher's, or a webhook notice for its instance id):
 *   const report = await drainer?.onNotice(notice, { migratedPods: ['ns/pod', …] });   // report.result: ok | retryable | fatal
 *
 * `migratedPods` must name every pod whose task is planned for migration, not only those already moved:
 * any other pod on the node is evicted at once, and an eviction in the middle of a checkpoint would kill it.
 * `createNodeDrainer` returns undefined when the actions are off (`SPOTWATCH_K8S=auto` outside a pod). A second
 * call for a notice still in progress returns the first call's report; a later one is safe (every step is
 * idempotent). It never runs past the notice deadline (less the margin).
 */
export { KubeApi, KubeCallError, classifyStatus, loadKubeConfig, toKubeCallError } from './kube-api.js';
export type { KubeOperations, NodeRef, Outcome, PodRef } from './kube-api.js';
export { K8sMetrics } from './metrics.js';
export {
  CORDONED_BY_ANNOTATION,
  NOTICE_ANNOTATION,
  NodeDrainer,
  TAINT_EFFECT,
  TAINT_KEY,
  planFor,
  selectPods,
} from './node-drainer.js';
export type { DrainReport, NodeDrainerOptions, NoticeContext, PodKey, PodResult, StepResult } from './node-drainer.js';
export { K8S_OPTIONS, createNodeDrainer, k8sEnabled, loadK8sConfig } from './options.js';
export type { K8sConfig } from './options.js';
