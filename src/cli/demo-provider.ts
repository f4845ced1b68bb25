import type { CloudProvider } from '../provider.js';
import { providerByName } from '../../providers/index.js';

/** The demo runs on the AWS emulator: the most common spot fleet, and its two-minute notice. */
export function awsProviderForDemo(): CloudProvider {
  const provider = providerByName('aws');
  if (!provider) throw new Error('the AWS provider is missing from this build');
  return provider;
}
