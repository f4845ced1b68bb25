import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { SpotwatchError } from './errors.js';
import type { Logger } from './logger.js';

/**
 * One config schema for every long-running command. Precedence: explicit option (CLI flag) over
 * environment over default. Validated once at start; every problem is reported together.
 *
 * `CONFIG_OPTIONS` is the single source for flag names, environment variables, defaults and help text:
 * the CLI's `--help` and the README's configuration table both come from it. The other option tables
 * (`spotwatch webhook`, the cloud APIs, the agent's Kubernetes settings) have the same shape and are loaded by the
 * same `loadOptionTable`.
 */
export interface OptionSpec {
  flag: string;
  env: readonly string[];
  description: string;
  default?: string;
  /** Never logged, nor echoed in a configuration error. */
  secret?: boolean;
}

export const CONFIG_OPTIONS = {
  provider: { flag: '--provider', env: ['SPOTWATCH_PROVIDER'], default: 'auto', description: 'Cloud to watch: aws, gcp, azure, or auto (short probes of each metadata service).' },
  metadataEndpoint: { flag: '--metadata-endpoint', env: ['SPOTWATCH_METADATA_ENDPOINT'], description: "Base URL of the metadata service (an emulator or any IMDS-compatible server); default: the provider's link-local address." },
  redisUrl: { flag: '--redis-url', env: ['SPOTWATCH_REDIS_URL', 'REDIS_URL'], default: 'redis://127.0.0.1:6379', description: 'Redis holding the queues.' },
  queuePrefix: { flag: '--queue-prefix', env: ['SPOTWATCH_QUEUE_PREFIX'], default: 'bull', description: 'BullMQ key prefix of the queues.' },
  nodeId: { flag: '--node-id', env: ['SPOTWATCH_NODE_ID', 'NODE_NAME'], description: 'This node\'s id in the registry; default: the hostname.' },
  instanceId: { flag: '--instance-id', env: ['SPOTWATCH_INSTANCE_ID'], description: 'Override the instance id the metadata service gives.' },
  httpHost: { flag: '--http-host', env: ['SPOTWATCH_HTTP_HOST'], default: '0.0.0.0', description: 'Address of the /healthz, /readyz, /metrics server.' },
  httpPort: { flag: '--http-port', env: ['SPOTWATCH_HTTP_PORT'], default: '9464', description: 'Port of the /healthz, /readyz, /metrics server (0: any free port).' },
  pollIntervalMs: { flag: '--poll-interval', env: ['SPOTWATCH_POLL_INTERVAL_MS'], default: '1000', description: 'Metadata poll interval in milliseconds (100 or more).' },
  requestTimeoutMs: { flag: '--request-timeout', env: ['SPOTWATCH_REQUEST_TIMEOUT_MS'], default: '1000', description: 'Timeout of one metadata request in milliseconds (the Azure watcher allows its documented slow first call regardless).' },
  imdsV1: { flag: '--imds-v1', env: ['SPOTWATCH_IMDS_V1'], default: 'false', description: 'AWS: fall back to IMDSv1 (no token) when the token endpoint is unavailable.' },
  spoolPath: { flag: '--spool', env: ['SPOTWATCH_SPOOL'], default: '/var/lib/spotwatch/spool.jsonl', description: 'File where notices wait (fsync\'d) while Redis is unreachable.' },
  migrate: { flag: '--migrate', env: ['SPOTWATCH_MIGRATE'], default: 'true', description: 'Run the migration side of the agent: registry heartbeat, planner, checkpoint/restore workers, image receiver.' },
  clusterToken: { flag: '--cluster-token', env: ['SPOTWATCH_CLUSTER_TOKEN'], description: 'Shared secret (16+ characters) agents prove to each other before an image stream; required with --migrate.' },
  peerHost: { flag: '--peer-host', env: ['SPOTWATCH_PEER_HOST'], default: '0.0.0.0', description: 'Address the image receiver listens on.' },
  peerPort: { flag: '--peer-port', env: ['SPOTWATCH_PEER_PORT'], default: '7070', description: 'Port of the image receiver (0: any free port).' },
  advertiseHost: { flag: '--advertise-host', env: ['SPOTWATCH_ADVERTISE_HOST', 'POD_IP'], description: "Address other agents use to reach this one; default: this node's first non-loopback IPv4 address." },
  tlsCert: { flag: '--tls-cert', env: ['SPOTWATCH_TLS_CERT'], description: 'PEM certificate of this agent for image streams (with --tls-key and --tls-ca: TLS between agents).' },
  tlsKey: { flag: '--tls-key', env: ['SPOTWATCH_TLS_KEY'], description: 'PEM private key for --tls-cert.' },
  tlsCa: { flag: '--tls-ca', env: ['SPOTWATCH_TLS_CA'], description: 'PEM of the cluster CA that signs every agent certificate.' },
  imageDir: { flag: '--image-dir', env: ['SPOTWATCH_IMAGE_DIR'], default: '/var/lib/spotwatch/images', description: 'Where received images and CRIU logs are kept (tmpfs is fastest).' },
  storageDir: { flag: '--storage-dir', env: ['SPOTWATCH_STORAGE_DIR'], default: '/var/lib/spotwatch/checkpoints', description: 'Where the checkpoint-to-storage fallback writes images (mount durable storage here).' },
  capacityPool: { flag: '--capacity-pool', env: ['SPOTWATCH_CAPACITY_POOL'], description: 'Capacity pool of this node (reclaimed together); default: instance type + zone.' },
  migrateOn: { flag: '--migrate-on', env: ['SPOTWATCH_MIGRATE_ON'], default: '', description: 'Also migrate on: comma list of rebalance, maintenance-migrate, maintenance-freeze (interruptions and stopping maintenance always migrate).' },
  initialRates: {
    flag: '--initial-rates',
    env: ['SPOTWATCH_INITIAL_RATES'],
    default: 'stream=200MB,restore=400MB,gpu=1000MB',
    description: 'Stage rates (per second) the planner assumes until this cluster has measured its own: stream (dump + transfer), restore, gpu (CUDA checkpoint and restore); suffixes kB, MB, GB.',
  },
  transparentHugepages: {
    flag: '--transparent-hugepages',
    env: ['SPOTWATCH_TRANSPARENT_HUGEPAGES'],
    default: 'keep',
    description: "keep: leave the node's transparent_hugepage setting (warn on a GPU node where it is not always); always: set it (root, /sys writable). GPU migrations ran 1.8x faster with always.",
  },
  lazyRestore: {
    flag: '--lazy-restore',
    env: ['SPOTWATCH_LAZY_RESTORE'],
    default: 'false',
    description: 'Post-copy restore on this node as a target: a task runs again as soon as CRIU has rebuilt it and its memory follows from the received image (criu lazy-pages); downtime ends a stage sooner. GPU tasks are restored eagerly.',
  },
  postCopy: {
    flag: '--post-copy',
    env: ['SPOTWATCH_POST_COPY'],
    default: 'false',
    description:
      "Post-copy from this node as a source: the freeze moves everything but a task's memory, the target runs the task at once and pulls the memory from the frozen source (criu dump --lazy-pages). Downtime no longer grows with memory; the task runs slower until its memory is in. If the transfer breaks, the task runs here again. Used only where the pull is expected to end within half the time left. Raises fs.pipe-max-size to 4 MiB where CRIU needs it. Needs plain TCP between agents (no TLS); GPU tasks move eagerly.",
  },
  criuKdatCache: {
    flag: '--criu-kdat-cache',
    env: ['SPOTWATCH_CRIU_KDAT_CACHE'],
    default: 'auto',
    description:
      "auto: where /run is not a tmpfs, CRIU cannot keep its kernel-feature cache and probes at every start (~35 ms, inside the downtime); the agent then probes once and bind-mounts the cache onto /run/criu.kdat (from /dev/shm: gone with a reboot). off: leave it to CRIU.",
  },
  criuBreakpoints: {
    flag: '--criu-breakpoints',
    env: ['SPOTWATCH_CRIU_BREAKPOINTS'],
    default: 'false',
    description:
      "Let CRIU stop tasks with hardware breakpoints (criu dump after its parasite, criu restore after its restorer: CRIU's default) instead of stepping through their last syscalls. Off by default: on the VMs measured the first debug-register write after a while cost 15-20 ms, inside the downtime.",
  },
  heartbeatMs: { flag: '--heartbeat-interval', env: ['SPOTWATCH_HEARTBEAT_INTERVAL_MS'], default: '2000', description: 'Registry heartbeat interval in ms; a node is unhealthy after 3 missed heartbeats.' },
  logLevel: { flag: '--log-level', env: ['SPOTWATCH_LOG_LEVEL', 'LOG_LEVEL'], default: 'info', description: 'trace, debug, info, warn, error, fatal or silent.' },
} as const satisfies Record<string, OptionSpec>;

export type ConfigKey = keyof typeof CONFIG_OPTIONS;

export const intString = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

export const boolString = z
  .string()
  .transform((s) => s.toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0', 'yes', 'no']))
  .transform((s) => s === 'true' || s === '1' || s === 'yes');

export const urlString = (protocols: string[]) =>
  z.string().refine((s) => {
    try {
      return protocols.includes(new URL(s).protocol);
    } catch {
      return false;
    }
  }, `must be a URL (${protocols.join(' or ')})`);

export const readableFile = z.string().refine((p) => {
  try {
    readFileSync(p);
    return true;
  } catch {
    return false;
  }
}, 'must be a readable file');

export const configSchema = z.object({
  provider: z.enum(['auto', 'aws', 'gcp', 'azure']),
  metadataEndpoint: urlString(['http:', 'https:']).optional(),
  redisUrl: urlString(['redis:', 'rediss:']),
  queuePrefix: z.string().min(1).regex(/^[^:\s]+$/, 'must not contain ":" or spaces'),
  nodeId: z.string().min(1).max(253).optional(),
  instanceId: z.string().min(1).optional(),
  httpHost: z.string().min(1),
  httpPort: intString(0, 65535),
  pollIntervalMs: intString(100, 3_600_000),
  requestTimeoutMs: intString(50, 120_000),
  imdsV1: boolString,
  spoolPath: z.string().min(1),
  migrate: boolString,
  clusterToken: z.string().min(16, 'must be at least 16 characters (e.g. openssl rand -hex 32)').optional(),
  peerHost: z.string().min(1),
  peerPort: intString(0, 65535),
  advertiseHost: z.string().min(1).optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  tlsCa: z.string().min(1).optional(),
  imageDir: z.string().min(1),
  storageDir: z.string().min(1),
  capacityPool: z.string().min(1).optional(),
  transparentHugepages: z.enum(['keep', 'always']),
  lazyRestore: boolString,
  postCopy: boolString,
  criuKdatCache: z.enum(['auto', 'off']),
  criuBreakpoints: boolString,
  migrateOn: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(z.enum(['rebalance', 'maintenance-migrate', 'maintenance-freeze']))),
  initialRates: z
    .string()
    .transform((text, ctx) => {
      const units: Record<string, number> = { '': 1, kb: 1e3, mb: 1e6, gb: 1e9 };
      const rates: Record<string, number> = {};
      for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
        const m = /^(stream|restore|gpu)=(\d+(?:\.\d+)?)\s*(kb|mb|gb)?$/i.exec(part);
        if (!m) {
          ctx.addIssue({ code: 'custom', message: `"${part}" is not stage=rate (stage: stream, restore or gpu; e.g. stream=1.3GB)` });
          return z.NEVER;
        }
        rates[m[1]!.toLowerCase()] = Number(m[2]) * units[(m[3] ?? '').toLowerCase()]!;
      }
      return { stream: rates.stream ?? 200e6, restore: rates.restore ?? 400e6, gpu: rates.gpu ?? 1000e6 };
    })
    .pipe(z.object({ stream: z.number().positive(), restore: z.number().positive(), gpu: z.number().positive() })),
  heartbeatMs: intString(200, 60_000),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
});

export type Config = z.infer<typeof configSchema>;

/** Rules that involve several options; reported together with the per-option problems. */
function crossChecks(c: Config): ConfigProblem<ConfigKey>[] {
  const problems: ConfigProblem<ConfigKey>[] = [];
  if (c.migrate && !c.clusterToken) problems.push({ key: 'clusterToken', message: 'is required while --migrate is on (agents authenticate image streams with it); or pass --migrate false' });
  const tls = [c.tlsCert, c.tlsKey, c.tlsCa].filter(Boolean).length;
  if (tls > 0 && tls < 3) problems.push({ key: 'tlsCert', message: 'TLS between agents needs all three of --tls-cert, --tls-key and --tls-ca' });
  return problems;
}

/** Where each effective value came from, for the start-up log line. */
export type ConfigOrigin = 'option' | 'env' | 'default';

/** An error found by a rule that involves several options, reported under one of them. */
export interface ConfigProblem<K extends string> {
  key: K;
  message: string;
}

/**
 * Resolves one option table against a schema: explicit option, then the first environment variable set,
 * then the default. `check` adds the problems of rules involving several options (run once the schema
 * passes). Throws one `CONFIG_INVALID` error listing every invalid value (and where it came from).
 */
export function loadOptionTable<T extends Record<string, OptionSpec>, S extends z.ZodType>(
  table: T,
  schema: S,
  options: Partial<Record<keyof T, string | undefined>>,
  env: NodeJS.ProcessEnv,
  check?: (config: z.infer<S>) => ConfigProblem<keyof T & string>[],
): { config: z.infer<S>; origins: Record<keyof T, ConfigOrigin> } {
  const raw: Record<string, string | undefined> = {};
  const origins = {} as Record<keyof T, ConfigOrigin>;
  const from: Record<string, string> = {};
  for (const key of Object.keys(table) as (keyof T & string)[]) {
    const spec = table[key] as OptionSpec;
    const explicit = options[key];
    const envName = spec.env.find((name) => env[name] !== undefined && env[name] !== '');
    if (explicit !== undefined) {
      raw[key] = explicit;
      origins[key] = 'option';
      from[key] = spec.flag;
    } else if (envName) {
      raw[key] = env[envName];
      origins[key] = 'env';
      from[key] = envName;
    } else {
      raw[key] = spec.default;
      origins[key] = 'default';
      from[key] = 'default';
    }
  }
  const parsed = schema.safeParse(raw);
  const cross = parsed.success && check ? check(parsed.data) : [];
  if (!parsed.success || cross.length > 0) {
    const issues = parsed.success ? cross.map((c) => ({ path: [c.key], message: c.message })) : parsed.error.issues;
    const problems = issues.map((issue) => {
      const key = String(issue.path[0]);
      const spec: OptionSpec | undefined = table[key];
      const where = spec ? `${spec.flag} (from ${from[key]})` : key;
      const shown = raw[key] !== undefined && !spec?.secret ? ` (got ${JSON.stringify(raw[key])})` : '';
      return `${where}: ${issue.message}${shown}`;
    });
    throw new SpotwatchError('CONFIG_INVALID', `invalid configuration — fix these and start again:\n  ${problems.join('\n  ')}`);
  }
  return { config: parsed.data as z.infer<S>, origins };
}

/**
 * Resolves the config: explicit option, then the first environment variable set, then the default.
 * Throws one `CONFIG_INVALID` error listing every invalid value (with its origin) at once.
 */
export function loadConfig(
  options: Partial<Record<ConfigKey, string | undefined>>,
  env: NodeJS.ProcessEnv = process.env,
  /** `agent`: also the rules only a running agent needs (cluster token with --migrate, complete TLS). */
  rules: 'agent' | 'client' = 'client',
): { config: Config; origins: Record<ConfigKey, ConfigOrigin> } {
  return loadOptionTable(CONFIG_OPTIONS, configSchema, options, env, rules === 'agent' ? crossChecks : undefined);
}

/** `--flag value` parseArgs options of an option table. */
export function tableArgOptions(table: Record<string, OptionSpec>): Record<string, { type: 'string' }> {
  return Object.fromEntries(Object.values(table).map((o) => [o.flag.slice(2), { type: 'string' as const }]));
}

/** Parsed flags → table keys (`--rate-limit 5` → `{ rateLimit: '5' }`). */
export function tableInput<K extends string>(table: Record<K, OptionSpec>, values: Record<string, unknown>): Partial<Record<K, string>> {
  const input: Partial<Record<K, string>> = {};
  for (const [key, spec] of Object.entries(table) as [K, OptionSpec][]) {
    const value = values[spec.flag.slice(2)];
    if (typeof value === 'string') input[key] = value;
  }
  return input;
}

/** Help text of an option table: flag (padded to `width`), description, environment variables and default. */
export function tableHelp(table: Record<string, OptionSpec>, width = 28): string {
  return Object.values(table)
    .map((spec) => `  ${spec.flag.padEnd(width)} ${spec.description}\n  ${''.padEnd(width)} env ${spec.env.join(', ')}${spec.default !== undefined ? `; default ${spec.default}` : ''}`)
    .join('\n');
}

/** Logs the effective configuration once at start (secrets in URLs redacted). */
export function logEffectiveConfig(logger: Logger, config: Config, origins: Record<ConfigKey, ConfigOrigin>): void {
  const shown: Record<string, unknown> = { ...config, redisUrl: redactUrl(config.redisUrl), clusterToken: config.clusterToken ? '***' : undefined };
  logger.info({ config: shown, origins }, 'effective configuration');
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}
