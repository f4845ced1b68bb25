import type { ProviderName } from '../notice.js';
import { awsInstanceLookup } from '../../providers/aws/sdk-client.js';
import { azureInstanceLookup } from '../../providers/azure/sdk-client.js';
import { gcpInstanceLookup } from '../../providers/gcp/sdk-client.js';
import type { CloudSdkSettings } from './cloud-settings.js';
import { ChainedInstanceLocator, type CloudInstanceLookup, type RegistryLookup } from './instance-locator.js';
import type { Logger } from '../logger.js';

/**
 * The per-cloud SDK lookups (providers/<cloud>/sdk-client.ts). The SDKs themselves load on first use.
 * Note: like providers/index.ts, this table is where src/ meets the providers' SDK modules.
 */
export function cloudLookups(settings: CloudSdkSettings): Record<ProviderName, CloudInstanceLookup> {
  return {
    aws: awsInstanceLookup(settings.aws),
    gcp: gcpInstanceLookup(settings.gcp),
    azure: azureInstanceLookup(settings.azure),
  };
}

/** Registry first (when the registry lookup is given), then the cloud SDKs. */
export function createInstanceLocator(options: { settings: CloudSdkSettings; registryLookup?: RegistryLookup | undefined; logger?: Logger | undefined }): ChainedInstanceLocator {
  return new ChainedInstanceLocator({ registryLookup: options.registryLookup, clouds: cloudLookups(options.settings), logger: options.logger });
}
