// Stands in for @kubernetes/client-node in the GPU bench's CLI bundle (bench/gpu/prepare.sh): src/k8s/kube-api.ts
// imports it statically, so marking it external makes the bundle fail to load without node_modules. The bench's
// agents run with --k8s false; anything that reaches the cluster API through this stub fails loudly.
const unavailable = (what) => {
  throw new Error(`${what}: @kubernetes/client-node is not in the GPU bench bundle (run the agent with --k8s false)`);
};
export class ApiException extends Error {}
export class KubeConfig {
  constructor() {
    unavailable('KubeConfig');
  }
}
export class CoreV1Api {
  constructor() {
    unavailable('CoreV1Api');
  }
}
export const PatchStrategy = { MergePatch: 'application/merge-patch+json', StrategicMergePatch: 'application/strategic-merge-patch+json', JsonPatch: 'application/json-patch+json' };
