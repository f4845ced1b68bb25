import type { TestProject } from 'vitest/node';
import { LocalRedis } from '../../src/util/local-redis.js';

/**
 * One real redis-server for the whole test run, on a free port, started here and stopped at the end.
 * Tests read its URL with `inject('redisUrl')` and isolate themselves with their own key prefixes.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = await LocalRedis.start();
  project.provide('redisUrl', redis.url);
  return async () => {
    await redis.destroy();
  };
}
