import { startFakeArm, startFakeCompute, type FakeApi } from '../fixtures/webhook/cloud-apis.js';
import { makeTestPki, type TestPki } from '../fixtures/webhook/pki.js';

/**
 * Local Compute Engine and Azure Resource Manager API servers (ARM over HTTPS with a test CA) holding the
 * instances the drill and lookup tests act on: GCE `spotwatch-gpu-1` (4520031799277581759) in spotwatch-demo,
 * Azure VM `gpu-vm-1` and scale-set VM `vmss_3` (vmss/3) in resource group spotwatch-rg of `subscription`.
 */
export interface FakeGpuClouds {
  pki: TestPki;
  compute: FakeApi;
  arm: FakeApi;
  close(): Promise<void>;
}

export async function startFakeGpuClouds(subscription: string): Promise<FakeGpuClouds> {
  const pki = makeTestPki(['localhost']);
  const compute = await startFakeCompute('spotwatch-demo', [{ id: '4520031799277581759', name: 'spotwatch-gpu-1', zone: 'us-central1-a', machineType: 'a3-highgpu-8g', spot: true, status: 'RUNNING' }]);
  const arm = await startFakeArm(
    subscription,
    [
      { resourceGroup: 'spotwatch-rg', name: 'gpu-vm-1', vmSize: 'Standard_NC24ads_A100_v4', priority: 'Spot', computerName: 'gpu-vm-1' },
      { resourceGroup: 'spotwatch-rg', name: 'vmss_3', scaleSet: { name: 'vmss', instanceId: '3' }, vmSize: 'Standard_NC24ads_A100_v4', priority: 'Spot', computerName: 'vmss000003' },
    ],
    { key: pki.serverKeyPem, cert: pki.serverCertPem },
  );
  return {
    pki,
    compute,
    arm,
    async close() {
      await Promise.all([compute.close(), arm.close()]);
      pki.cleanup();
    },
  };
}
