import type { CloudProvider } from '../src/provider.js';
import type { ProviderName } from '../src/notice.js';
import { awsProvider } from './aws/index.js';

/** Every cloud spotwatch supports. `src/` reaches providers only through this list and `CloudProvider`. */
export const PROVIDER_LIST: readonly CloudProvider[] = [awsProvider];

export function providerByName(name: ProviderName): CloudProvider | undefined {
  return PROVIDER_LIST.find((p) => p.name === name);
}
