import { SpotwatchError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { CloudProvider } from '../provider.js';
import { PROVIDER_LIST, providerByName } from '../../providers/index.js';
import type { ProviderName } from '../notice.js';

export interface ResolvedProvider {
  provider: CloudProvider;
  endpoint: string;
  detected: boolean;
}

/** How long each short detection probe may take. */
const PROBE_TIMEOUT_MS = 1000;

/**
 * Picks the cloud: `--provider` when given; otherwise short probes of every provider's metadata service (at
 * `--metadata-endpoint` when given, else each one's link-local address), in parallel. No answer is an error
 * that says how to point spotwatch at an emulator.
 */
export async function resolveProvider(choice: 'auto' | ProviderName, endpoint: string | undefined, logger: Logger): Promise<ResolvedProvider> {
  if (choice !== 'auto') {
    const provider = providerByName(choice);
    if (!provider) throw new SpotwatchError('CONFIG_INVALID', `--provider ${choice} is not available in this build`);
    return { provider, endpoint: endpoint ?? provider.defaultMetadataEndpoint, detected: false };
  }
  const probes = await Promise.all(
    PROVIDER_LIST.map(async (provider) => {
      const url = endpoint ?? provider.defaultMetadataEndpoint;
      return { provider, url, ok: await provider.detect(url, PROBE_TIMEOUT_MS) };
    }),
  );
  const found = probes.find((p) => p.ok);
  if (!found) {
    const tried = probes.map((p) => `${p.provider.name} at ${p.url}`).join(', ');
    throw new SpotwatchError(
      'NO_CLOUD_DETECTED',
      `no cloud metadata service answered (tried ${tried}). On a cloud VM check that the metadata service is reachable; elsewhere run an emulator ("spotwatch simulate aws") and pass --provider aws --metadata-endpoint http://127.0.0.1:8111`,
    );
  }
  logger.info({ provider: found.provider.name, endpoint: found.url }, 'cloud detected');
  return { provider: found.provider, endpoint: found.url, detected: true };
}
