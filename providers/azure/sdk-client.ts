import { rootCertificates } from 'node:tls';
import type { AzureSdkSettings, RecordedCall } from '../../src/lookup/cloud-settings.js';
import type { CloudInstanceLookup, NodeInfo } from '../../src/lookup/instance-locator.js';

/**
 * Azure Resource Manager through `@azure/arm-compute` (loaded on first use): VirtualMachines and
 * VirtualMachineScaleSetVMs (get, list, simulateEviction). `endpoint` points the real client at another
 * server (ARM only sends bearer tokens over HTTPS: tests run a local HTTPS server with their own CA, passed
 * as `ca`); `accessToken` replaces DefaultAzureCredential.
 */

type ArmModule = typeof import('@azure/arm-compute');
export type ComputeClient = InstanceType<ArmModule['ComputeManagementClient']>;

export const ARM_ENDPOINT = 'https://management.azure.com';

/** The structural shape of @azure/core-auth's TokenCredential. */
export interface AzureTokenCredential {
  getToken(scopes: string | string[]): Promise<{ token: string; expiresOnTimestamp: number } | null>;
}

export function staticTokenCredential(token: string): AzureTokenCredential {
  return { getToken: () => Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3600_000 }) };
}

/**
 * A pipeline policy that records each request and answers it locally (204, no body) instead of sending it:
 * drill dry runs print exactly the requests the SDK would make.
 */
function recordingPolicy(calls: RecordedCall[]) {
  return {
    name: 'spotwatchRecordOnly',
    sendRequest: (request: { method: string; url: string; body?: unknown }) => {
      calls.push({ method: request.method, url: request.url, body: typeof request.body === 'string' && request.body !== '' ? request.body : undefined });
      const headers = new Map<string, string>();
      return Promise.resolve({
        request,
        status: 204,
        headers: {
          get: (name: string) => headers.get(name.toLowerCase()),
          has: (name: string) => headers.has(name.toLowerCase()),
          set: (name: string, value: string | number | boolean) => void headers.set(name.toLowerCase(), String(value)),
          delete: (name: string) => void headers.delete(name.toLowerCase()),
          toJSON: () => Object.fromEntries(headers),
          [Symbol.iterator]: () => headers.entries(),
        },
      });
    },
  };
}

export interface ComputeClientOptions {
  /** Overrides the credential (else a static token from the settings, else DefaultAzureCredential). */
  credential?: AzureTokenCredential | undefined;
  /** Record requests instead of sending them (dry run). */
  record?: RecordedCall[] | undefined;
}

export async function createComputeClient(settings: AzureSdkSettings, options: ComputeClientOptions = {}): Promise<ComputeClient> {
  if (!settings.subscriptionId) throw new Error('Azure needs a subscription id (--azure-subscription or AZURE_SUBSCRIPTION_ID)');
  const { ComputeManagementClient } = await import('@azure/arm-compute');
  let credential = options.credential ?? (settings.accessToken ? staticTokenCredential(settings.accessToken) : undefined);
  if (!credential && options.record) credential = staticTokenCredential('dry-run');
  if (!credential) {
    const { DefaultAzureCredential } = await import('@azure/identity');
    credential = new DefaultAzureCredential();
  }
  const clientOptions: Record<string, unknown> = { retryOptions: { maxRetries: 1 } };
  if (settings.endpoint) clientOptions.endpoint = settings.endpoint.replace(/\/+$/, '');
  if (settings.ca) clientOptions.tlsOptions = { ca: [...rootCertificates, settings.ca] };
  if (options.record) clientOptions.additionalPolicies = [{ policy: recordingPolicy(options.record), position: 'perCall' }];
  return new ComputeManagementClient(credential as ConstructorParameters<ArmModule['ComputeManagementClient']>[0], settings.subscriptionId, clientOptions);
}

/** An Azure VM as notices name it: `name` (a VM) or `<scale set>_<instance id>` (a Uniform scale-set VM). */
export type AzureVmRef = { kind: 'vm'; resourceGroup?: string | undefined; name: string } | { kind: 'vmss'; resourceGroup?: string | undefined; scaleSet: string; instanceId: string };

/**
 * Reads a VM reference: an ARM resource id (`/subscriptions/…/resourceGroups/rg/providers/Microsoft.Compute/
 * virtualMachines/vm` or `…/virtualMachineScaleSets/set/virtualMachines/3`), `set_3`, or a VM name. VM names
 * cannot contain `_`, so `<name>_<digits>` is always a scale-set instance.
 */
export function parseVmRef(ref: string, resourceGroup?: string): AzureVmRef {
  const id = /^\/subscriptions\/[^/]+\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/(.+)$/i.exec(ref);
  if (id) {
    const rest = id[2]!;
    const vmss = /^virtualMachineScaleSets\/([^/]+)\/virtualMachines\/([^/]+)$/i.exec(rest);
    if (vmss) return { kind: 'vmss', resourceGroup: id[1], scaleSet: vmss[1]!, instanceId: vmss[2]! };
    const vm = /^virtualMachines\/([^/]+)$/i.exec(rest);
    if (vm) return { kind: 'vm', resourceGroup: id[1], name: vm[1]! };
    throw new Error(`${ref} is not a virtual machine resource id`);
  }
  const vmss = /^(.+)_(\d+)$/.exec(ref);
  if (vmss) return { kind: 'vmss', resourceGroup, scaleSet: vmss[1]!, instanceId: vmss[2]! };
  return { kind: 'vm', resourceGroup, name: ref };
}

function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { statusCode?: number }).statusCode === 404;
}

const resourceGroupOf = (id: string | undefined) => (id ? /\/resourceGroups\/([^/]+)\//i.exec(id)?.[1] : undefined);

export function azureInstanceLookup(settings: AzureSdkSettings, options: ComputeClientOptions = {}): CloudInstanceLookup {
  let ready: Promise<ComputeClient> | undefined;
  return {
    provider: 'azure',
    async lookup(instanceId: string): Promise<NodeInfo | undefined> {
      ready ??= createComputeClient(settings, options);
      const client = await ready;
      const ref = parseVmRef(instanceId, settings.resourceGroup);
      try {
        if (ref.kind === 'vm') {
          let group = ref.resourceGroup;
          if (!group) {
            for await (const vm of client.virtualMachines.listAll()) {
              if (vm.name === ref.name) {
                group = resourceGroupOf(vm.id);
                break;
              }
            }
            if (!group) return undefined;
          }
          const vm = await client.virtualMachines.get(group, ref.name);
          return toNodeInfo(vm as ArmVm, instanceId, group);
        }
        let group = ref.resourceGroup;
        let priority: string | undefined;
        if (!group) {
          for await (const set of client.virtualMachineScaleSets.listAll()) {
            if (set.name === ref.scaleSet) {
              group = resourceGroupOf(set.id);
              priority = (set as { virtualMachineProfile?: { priority?: string } }).virtualMachineProfile?.priority;
              break;
            }
          }
          if (!group) return undefined;
        }
        const vm = await client.virtualMachineScaleSetVMs.get(group, ref.scaleSet, ref.instanceId);
        return toNodeInfo(vm as ArmVm, instanceId, group, priority);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
  };
}

interface ArmVm {
  id?: string;
  name?: string;
  location?: string;
  zones?: string[];
  tags?: Record<string, string>;
  sku?: { name?: string };
  priority?: string;
  provisioningState?: string;
  hardwareProfile?: { vmSize?: string };
  osProfile?: { computerName?: string };
}

function toNodeInfo(vm: ArmVm, instanceId: string, resourceGroup: string, scaleSetPriority?: string): NodeInfo {
  const priority = vm.priority ?? scaleSetPriority;
  return {
    provider: 'azure',
    instanceId,
    source: 'cloud',
    name: vm.name,
    hostname: vm.osProfile?.computerName,
    zone: vm.zones?.[0] !== undefined && vm.location ? `${vm.location}-${vm.zones[0]}` : undefined,
    region: vm.location,
    instanceType: vm.hardwareProfile?.vmSize ?? vm.sku?.name,
    lifecycle: priority === 'Spot' || priority === 'Low' ? 'spot' : priority === 'Regular' ? 'on-demand' : 'unknown',
    state: vm.provisioningState,
    resourceId: vm.id,
    scope: resourceGroup,
    labels: vm.tags,
  };
}
