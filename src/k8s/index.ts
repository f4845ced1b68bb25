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
