import type { CloudProvider } from '../src/provider.js';
import type { ProviderName } from '../src/notice.js';
import { awsProvider } from './aws/index.js';
import { azureProvider } from './azure/index.js';
import { gcpProvider } from './gcp/index.js';

/** Every cloud spotwatch supports. `src/` reaches providers only through this list and `CloudProvider`. */
export const PROVIDER_LIST: readonly CloudProvider[] = [awsProvider, gcpProvider, azureProvider];

export function providerByName(name: ProviderName): CloudProvider | undefined {
  return PROVIDER_LIST.find((p) => p.name === name);
}
