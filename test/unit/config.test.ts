import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { SpotwatchError } from '../../src/errors.js';

describe('config', () => {
  it('takes an explicit option over the environment over the default, and says where each came from', () => {
    const { config, origins } = loadConfig({ pollIntervalMs: '250' }, { SPOTWATCH_POLL_INTERVAL_MS: '500', REDIS_URL: 'redis://10.0.0.5:6380', SPOTWATCH_HTTP_PORT: '9000' });
    expect(config.pollIntervalMs).toBe(250);
    expect(origins.pollIntervalMs).toBe('option');
    expect(config.redisUrl).toBe('redis://10.0.0.5:6380');
    expect(origins.redisUrl).toBe('env');
    expect(config.httpPort).toBe(9000);
    expect(config.requestTimeoutMs).toBe(1000);
    expect(origins.requestTimeoutMs).toBe('default');
    expect(config.imdsV1).toBe(false);
    expect(config.provider).toBe('auto');
  });

  it('reads the planner\'s initial stage rates, with units, and names a malformed one', () => {
    expect(loadConfig({}, {}).config.initialRates).toEqual({ stream: 200e6, restore: 400e6, gpu: 1000e6 });
    expect(loadConfig({ initialRates: 'stream=1.3GB, gpu=1500MB' }, {}).config.initialRates).toEqual({ stream: 1.3e9, restore: 400e6, gpu: 1.5e9 });
    expect(() => loadConfig({ initialRates: 'stream=fast' }, {})).toThrow(/--initial-rates.*"stream=fast" is not stage=rate/);
  });

  it('prefers SPOTWATCH_REDIS_URL over REDIS_URL', () => {
    const { config } = loadConfig({}, { SPOTWATCH_REDIS_URL: 'redis://a:1', REDIS_URL: 'redis://b:2' });
    expect(config.redisUrl).toBe('redis://a:1');
  });

  it('reports every invalid value in one error', () => {
    let error: unknown;
    try {
      loadConfig({ pollIntervalMs: '50', provider: 'oracle' }, { SPOTWATCH_IMDS_V1: 'maybe', SPOTWATCH_METADATA_ENDPOINT: 'ftp://x' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SpotwatchError);
    expect((error as SpotwatchError).code).toBe('CONFIG_INVALID');
    const message = (error as Error).message;
    expect(message).toContain('--poll-interval (from --poll-interval)');
    expect(message).toContain('--provider');
    expect(message).toContain('--imds-v1 (from SPOTWATCH_IMDS_V1)');
    expect(message).toContain('--metadata-endpoint (from SPOTWATCH_METADATA_ENDPOINT)');
  });
});
