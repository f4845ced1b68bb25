import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, type Config } from '../config.js';
import { Registry } from '../registry/registry.js';
import { configArgOptions, flagsToConfigInput } from './agent-command.js';
import type { CliIo } from './io.js';

/**
 * Parses a client command's own flags together with the shared config flags (`--redis-url`, `--node-id`, …),
 * so `spotwatch run|tasks|status` find the same Redis and node as the agent, from flags or environment.
 */
export function parseClientArgs<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], own: T, io: CliIo) {
  const { values, positionals } = parseArgs({ args: argv, options: { ...configArgOptions(), ...own }, strict: true, allowPositionals: true });
  const { config } = loadConfig(flagsToConfigInput(values), io.env);
  return { values: values as Record<string, string | boolean | undefined>, positionals, config };
}

export function openRegistry(config: Config): Registry {
  return new Registry(config.redisUrl, config.queuePrefix);
}
