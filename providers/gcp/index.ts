import type { CloudProvider } from '../../src/provider.js';
import { request } from '../../src/util/http-request.js';
import { GCP_SIMULATE_COMMANDS, startGcpEmulator } from './emulator.js';
import { GCP_METADATA_PREFIX } from './metadata-client.js';
import { gcpParsers } from './parsers.js';
import { GcpWatcher } from './watcher.js';

/**
 * The GCE metadata server. `http://metadata.google.internal` names the same server; the address avoids a DNS
 * lookup (and its failure modes) on every start.
 */
export const GCP_METADATA_ENDPOINT = 'http://169.254.169.254';

export const gcpProvider: CloudProvider = {
  name: 'gcp',
  defaultMetadataEndpoint: GCP_METADATA_ENDPOINT,
  parsers: gcpParsers,
  async detect(endpoint, timeoutMs) {
    // Only the GCE metadata server answers `instance/id` with a number and `Metadata-Flavor: Google`.
    try {
      const base = endpoint.replace(/\/+$/, '');
      const answer = await request(`${base}${GCP_METADATA_PREFIX}instance/id`, { headers: { 'Metadata-Flavor': 'Google' }, timeoutMs, maxBytes: 4096 });
      return answer.status === 200 && answer.headers['metadata-flavor'] === 'Google' && /^\d+$/.test(answer.body.trim());
    } catch {
      return false;
    }
  },
  createWatcher: (options) => new GcpWatcher(options),
  startEmulator: startGcpEmulator,
  simulateCommands: GCP_SIMULATE_COMMANDS,
};

export { GcpWatcher } from './watcher.js';
export { GcpMetadataClient } from './metadata-client.js';
export { startGcpEmulator } from './emulator.js';
