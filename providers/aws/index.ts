import type { CloudProvider } from '../../src/provider.js';
import { request } from '../../src/util/http-request.js';
import { AWS_SIMULATE_COMMANDS, startAwsEmulator } from './emulator.js';
import { awsParsers } from './parsers.js';
import { AwsImdsWatcher } from './watcher.js';

export const AWS_METADATA_ENDPOINT = 'http://169.254.169.254';

export const awsProvider: CloudProvider = {
  name: 'aws',
  defaultMetadataEndpoint: AWS_METADATA_ENDPOINT,
  parsers: awsParsers,
  async detect(endpoint, timeoutMs) {
    // IMDSv2's token endpoint answers a PUT with a token; nothing else on the link-local address does.
    try {
      const base = endpoint.replace(/\/+$/, '');
      const token = await request(`${base}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }, timeoutMs });
      if (token.status === 200 && token.body.trim() !== '') return true;
      const v1 = await request(`${base}/latest/meta-data/instance-id`, { timeoutMs });
      return v1.status === 200 && /^i-[0-9a-f]+$/.test(v1.body.trim());
    } catch {
      return false;
    }
  },
  createWatcher: (options) => new AwsImdsWatcher(options),
  startEmulator: startAwsEmulator,
  simulateCommands: AWS_SIMULATE_COMMANDS,
};
