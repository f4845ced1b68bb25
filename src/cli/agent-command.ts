import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { resolveProvider } from '../agent/detect-provider.js';
import { CONFIG_OPTIONS, loadConfig, logEffectiveConfig, tableArgOptions, tableHelp, tableInput } from '../config.js';
import { createLogger } from '../logger.js';
import { EXIT, type CliIo } from './io.js';
import { waitForShutdownSignal } from './signals.js';
import { createNodeDrainer, K8S_OPTIONS, loadK8sConfig } from '../k8s/options.js';

export async function agentCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...tableArgOptions(CONFIG_OPTIONS), ...tableArgOptions(K8S_OPTIONS), help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    io.stdout.write(`usage: spotwatch agent [options]\n\nWatches this node's cloud metadata service and enqueues every interruption notice.\n\noptions (flag, then environment, then default):\n${tableHelp(CONFIG_OPTIONS, 20)}\n\nKubernetes (docs/deploy.md):\n${tableHelp(K8S_OPTIONS, 20)}\n`);
    return EXIT.ok;
  }
  const { config, origins } = loadConfig(tableInput(CONFIG_OPTIONS, values), io.env, 'agent');
  const logger = createLogger({ level: config.logLevel, name: 'spotwatch-agent' });
  logEffectiveConfig(logger, config, origins);
  const k8s = loadK8sConfig(tableInput(K8S_OPTIONS, values), io.env);
  const { provider, endpoint } = await resolveProvider(config.provider, config.metadataEndpoint, logger);
  const agent = new Agent({ config, provider, endpoint, logger });
  const drainer = await createNodeDrainer({ config: k8s, nodeName: agent.nodeId, logger, registry: agent.metrics.registry, env: io.env });
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
