import { DrillError, formatCall, type CloudDrill, type DrillRequest } from '../../src/drill/drill.js';
import type { RecordedCall } from '../../src/lookup/cloud-settings.js';
import { createComputeClient, parseVmRef } from './sdk-client.js';

/**
 * Azure: `simulateEviction` of a Spot VM (VirtualMachines) or a Spot scale-set instance
 * (VirtualMachineScaleSetVMs) through the ARM SDK. Azure then sends the Preempt scheduled event (30 s) and
 * evicts the VM.
 */
export const azureDrill: CloudDrill = {
  provider: 'azure',
  help: '  --instance VM             a VM name, <scale set>_<instance id> (vmss_3), or an ARM resource id\n  --azure-subscription S  --azure-resource-group RG\n  --azure-endpoint URL      ARM override   --azure-access-token T   instead of DefaultAzureCredential\n  --emulator URL            drive `spotwatch simulate azure` instead (POST <url>/_spotwatch/v1/schedule, a Preempt event)',
  emulator: (instance) => {
    const ref = parseVmRef(instance);
    const name = ref.kind === 'vm' ? ref.name : `${ref.scaleSet}_${ref.instanceId}`;
    return { command: 'schedule', body: { type: 'Preempt', resources: [name] }, description: `Preempt scheduled event for ${name}` };
  },
  async cloud(request: DrillRequest): Promise<void> {
    let ref;
    try {
      ref = parseVmRef(request.instance, request.settings.azure.resourceGroup);
    } catch (err) {
      throw new DrillError(err instanceof Error ? err.message : String(err));
    }
    if (!request.settings.azure.subscriptionId) throw new DrillError('Azure drill needs the subscription: --azure-subscription (or AZURE_SUBSCRIPTION_ID)');
    if (!ref.resourceGroup) throw new DrillError('Azure drill needs the resource group: --azure-resource-group, or --instance as an ARM resource id');
    const calls: RecordedCall[] = [];
    const client = await createComputeClient(request.settings.azure, request.act ? {} : { record: calls });
    const what = ref.kind === 'vm' ? `VM ${ref.name}` : `scale-set ${ref.scaleSet} instance ${ref.instanceId}`;
    if (ref.kind === 'vm') await client.virtualMachines.simulateEviction(ref.resourceGroup, ref.name);
    else await client.virtualMachineScaleSetVMs.simulateEviction(ref.resourceGroup, ref.scaleSet, ref.instanceId);
    if (!request.act) {
      request.out(`dry run: would call (Azure Resource Manager, ${what} in ${ref.resourceGroup}):`);
      for (const call of calls) request.out(`  ${formatCall(call)}`);
      request.out('Azure then sends the Preempt scheduled event and evicts the Spot VM ~30 s later. Add --yes to call it.');
      return;
    }
    request.out(`simulateEviction accepted for ${what} in ${ref.resourceGroup}: the Preempt scheduled event follows, eviction ~30 s later`);
  },
};
