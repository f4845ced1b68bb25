import { parseArgs } from 'node:util';
import { redactUrl, tableArgOptions, tableHelp, tableInput } from '../config.js';
import { createLogger } from '../logger.js';
import { cloudSettings, CLOUD_OPTIONS, loadCloudConfig } from '../lookup/cloud-config.js';
import { createInstanceLocator } from '../lookup/cloud-lookups.js';
import { registryLookupFrom } from '../lookup/instance-locator.js';
import { Registry } from '../registry/registry.js';
import { BullmqNoticeQueue } from '../queue/bullmq-notice-queue.js';
import { loadWebhookConfig, logEffectiveWebhookConfig, WEBHOOK_OPTIONS } from '../webhook/webhook-config.js';
import { WebhookServer } from '../webhook/webhook-server.js';
import { EXIT, type CliIo } from './io.js';
import { waitForShutdownSignal } from './signals.js';

const HELP = `usage: spotwatch webhook [options]

Receives the clouds' event-bridge deliveries and enqueues each interruption notice (same notice ids as the
agents, so a notice seen by both is one job). Routes: POST /v1/events/eventbridge, /v1/events/sns,
/v1/events/pubsub, /v1/events/eventgrid (and OPTIONS there); GET /healthz, /readyz, /metrics.
A route answers only when its source is configured. See docs/webhook.md.

options (flag, then environment, then default):
${tableHelp(WEBHOOK_OPTIONS)}

instance lookup (--lookup true):
${tableHelp(CLOUD_OPTIONS)}
`;

export async function webhookCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...tableArgOptions(WEBHOOK_OPTIONS), ...tableArgOptions(CLOUD_OPTIONS), help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    io.stdout.write(HELP);
    return EXIT.ok;
  }
  const { config, origins } = loadWebhookConfig(tableInput(WEBHOOK_OPTIONS, values), io.env);
  const cloud = config.lookup ? loadCloudConfig(tableInput(CLOUD_OPTIONS, values), io.env).config : undefined;
  const logger = createLogger({ level: config.logLevel, name: 'spotwatch-webhook' });
  logEffectiveWebhookConfig(logger, config, origins);
  const queue = new BullmqNoticeQueue({ redisUrl: config.redisUrl, prefix: config.queuePrefix, commandTimeoutMs: Math.min(1000, config.enqueueTimeoutMs) });
  // Which node an event names: the registry the agents heartbeat into first, then the cloud's API.
  const registry = cloud ? new Registry(config.redisUrl, config.queuePrefix) : undefined;
  const locator = cloud ? createInstanceLocator({ settings: cloudSettings(cloud), registryLookup: registry && registryLookupFrom(registry), logger }) : undefined;
  const server = new WebhookServer({ config, queue, logger, locator });
  const stopping = waitForShutdownSignal();
  try {
    await server.start();
    if (!(await queue.ping())) logger.warn({ redisUrl: redactUrl(config.redisUrl) }, 'Redis does not answer yet: deliveries are answered 503 until it does');
    const signal = await stopping;
    logger.info({ signal }, 'shutting down');
  } finally {
    await server.close();
    await queue.close();
    await registry?.close();
  }
  return EXIT.ok;
}
