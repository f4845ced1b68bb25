import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { resolveProvider } from '../agent/detect-provider.js';
import { CONFIG_OPTIONS, loadConfig, logEffectiveConfig, type ConfigKey } from '../config.js';
import { createLogger } from '../logger.js';
import { EXIT, type CliIo } from './io.js';
import { waitForShutdownSignal } from './signals.js';
import { createNodeDrainer, K8S_OPTIONS, loadK8sConfig, type K8sOptionKey } from '../k8s/options.js';

/** `--flag value` options of every config key (booleans take true/false). */
export function configArgOptions(): Record<string, { type: 'string' }> {
  return Object.fromEntries(Object.values(CONFIG_OPTIONS).map((o) => [o.flag.slice(2), { type: 'string' as const }]));
}

/** Parsed flags → config keys (`--poll-interval 250` → `{ pollIntervalMs: '250' }`). */
export function flagsToConfigInput(values: Record<string, unknown>): Partial<Record<ConfigKey, string>> {
  const input: Partial<Record<ConfigKey, string>> = {};
  for (const [key, spec] of Object.entries(CONFIG_OPTIONS) as [ConfigKey, { flag: string }][]) {
    const value = values[spec.flag.slice(2)];
    if (typeof value === 'string') input[key] = value;
  }
  return input;
}

export function configHelp(): string {
  return Object.values(CONFIG_OPTIONS)
    .map((o) => {
      const spec = o as { flag: string; env: readonly string[]; description: string; default?: string };
      return `  ${spec.flag.padEnd(20)} ${spec.description}\n  ${''.padEnd(20)} env ${spec.env.join(', ')}${spec.default !== undefined ? `; default ${spec.default}` : ''}`;
    })
    .join('\n');
}

const k8sArgOptions = () => Object.fromEntries(Object.values(K8S_OPTIONS).map((o) => [o.flag.slice(2), { type: 'string' as const }]));

function k8sHelp(): string {
  return Object.values(K8S_OPTIONS)
    .map((o) => {
      const spec = o as { flag: string; env: readonly string[]; description: string; default?: string };
      return `  ${spec.flag.padEnd(20)} ${spec.description}\n  ${''.padEnd(20)} env ${spec.env.join(', ')}${spec.default !== undefined ? `; default ${spec.default}` : ''}`;
    })
    .join('\n');
}

export async function agentCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...configArgOptions(), ...k8sArgOptions(), help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    io.stdout.write(`usage: spotwatch agent [options]\n\nWatches this node's cloud metadata service and enqueues every interruption notice.\n\noptions (flag, then environment, then default):\n${configHelp()}\n\nKubernetes (docs/deploy.md):\n${k8sHelp()}\n`);
    return EXIT.ok;
  }
  const { config, origins } = loadConfig(flagsToConfigInput(values), io.env, 'agent');
  const logger = createLogger({ level: config.logLevel, name: 'spotwatch-agent' });
  logEffectiveConfig(logger, config, origins);
  const flagValues = values as Record<string, unknown>;
  const k8sInput = Object.fromEntries(Object.entries(K8S_OPTIONS).map(([key, o]) => [key, flagValues[o.flag.slice(2)]]).filter(([, v]) => typeof v === 'string')) as Partial<Record<K8sOptionKey, string>>;
  const k8s = loadK8sConfig(k8sInput, io.env);
  const { provider, endpoint } = await resolveProvider(config.provider, config.metadataEndpoint, logger);
  const agent = new Agent({ config, provider, endpoint, logger });
  const drainer = createNodeDrainer({ config: k8s, nodeName: agent.nodeId, logger, registry: agent.metrics.registry, env: io.env });
  if (drainer) {
    agent.setDrainer(drainer);
    logger.info({ node: agent.nodeId }, 'Kubernetes actions on: cordon, taint, Event and eviction of pods that are not migrated');
  }
  const stopping = waitForShutdownSignal();
  const started = agent.start();
  try {
    const first = await Promise.race([started.then(() => 'started' as const), stopping]);
    const signal = first === 'started' ? await stopping : first;
    logger.info({ signal }, first === 'started' ? 'shutting down' : 'shutting down before the watcher started');
  } finally {
    started.catch(() => {}); // an identity read aborted by the shutdown is expected
    await agent.stop();
  }
  return EXIT.ok;
}
