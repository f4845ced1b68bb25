import { describe, expect, it } from 'vitest';
import { resolveProvider } from '../../src/agent/detect-provider.js';
import { silentLogger } from '../../src/logger.js';
import { PROVIDER_LIST } from '../../providers/index.js';
import { freePort } from '../../src/util/free-port.js';

describe('cloud auto-detection', () => {
  it.each(PROVIDER_LIST.map((p) => p.name))('finds %s from its metadata emulator alone', async (name) => {
    const emulator = await PROVIDER_LIST.find((p) => p.name === name)!.startEmulator({ host: '127.0.0.1', port: 0 });
    try {
      const resolved = await resolveProvider('auto', emulator.url, silentLogger);
      expect(resolved).toMatchObject({ detected: true, endpoint: emulator.url });
      expect(resolved.provider.name).toBe(name);
    } finally {
      await emulator.close();
    }
  });

  it('says which services it tried when nothing answers', async () => {
    const port = await freePort();
    await expect(resolveProvider('auto', `http://127.0.0.1:${port}`, silentLogger)).rejects.toThrow(/no cloud metadata service answered \(tried aws at .*gcp at .*azure at/);
  });

  it('takes --provider as given, without probing', async () => {
    const resolved = await resolveProvider('azure', undefined, silentLogger);
    expect(resolved).toMatchObject({ detected: false, endpoint: 'http://169.254.169.254' });
  });
});
