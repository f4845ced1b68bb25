import type { CloudProvider } from '../../src/provider.js';
import { request } from '../../src/util/http-request.js';
import { AZURE_SIMULATE_COMMANDS, startAzureEmulator } from './emulator.js';
import { AZURE_COMPUTE_API_VERSION, AZURE_COMPUTE_PATH, approveScheduledEvent } from './metadata-client.js';
import { azureParsers } from './parsers.js';
import { AzureWatcher } from './watcher.js';

/** Azure IMDS (Instance Metadata Service, Scheduled Events). */
export const AZURE_METADATA_ENDPOINT = 'http://169.254.169.254';

export const azureProvider: CloudProvider = {
  name: 'azure',
  defaultMetadataEndpoint: AZURE_METADATA_ENDPOINT,
  parsers: azureParsers,
  async detect(endpoint, timeoutMs) {
    // Only Azure IMDS answers /metadata/instance/compute (with `Metadata: true`) with the VM's vmId.
    try {
      const base = endpoint.replace(/\/+$/, '');
      const answer = await request(`${base}${AZURE_COMPUTE_PATH}?api-version=${AZURE_COMPUTE_API_VERSION}`, { headers: { Metadata: 'true' }, timeoutMs, maxBytes: 256 * 1024 });
      if (answer.status !== 200) return false;
      const compute = JSON.parse(answer.body) as { vmId?: unknown };
      return typeof compute === 'object' && compute !== null && typeof compute.vmId === 'string' && compute.vmId !== '';
    } catch {
      return false;
    }
  },
  createWatcher: (options) => new AzureWatcher(options),
  startEmulator: startAzureEmulator,
  simulateCommands: AZURE_SIMULATE_COMMANDS,
  // Every task is safe: let Azure start the event now instead of waiting out NotBefore.
  async afterDrain(endpoint, notice) {
    if (notice.eventId && notice.kind !== 'cancelled') await approveScheduledEvent(endpoint, notice.eventId);
  },
};

export { AzureWatcher } from './watcher.js';
export { AzureMetadataClient, approveScheduledEvent } from './metadata-client.js';
export { startAzureEmulator } from './emulator.js';
