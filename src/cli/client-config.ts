import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CONFIG_OPTIONS, loadConfig, tableArgOptions, tableInput, type Config } from '../config.js';
import { Registry } from '../registry/registry.js';
import type { CliIo } from './io.js';

/**
 * Parses a client command's own flags together with the shared config flags (`--redis-url`, `--node-id`, …),
 * so `spotwatch run|tasks|status` find the same Redis and node as the agent, from flags or environment.
 */
export function parseClientArgs<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], own: T, io: CliIo) {
  const { values, positionals } = parseArgs({ args: argv, options: { ...tableArgOptions(CONFIG_OPTIONS), ...own }, strict: true, allowPositionals: true });
  const { config } = loadConfig(tableInput(CONFIG_OPTIONS, values), io.env);
  return { values: values as Record<string, string | boolean | undefined>, positionals, config };
}

export function openRegistry(config: Config): Registry {
  return new Registry(config.redisUrl, config.queuePrefix);
}
