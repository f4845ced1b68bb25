import { parseArgs } from 'node:util';
import { PROVIDERS, type ProviderName } from '../notice.js';
import { providerByName } from '../../providers/index.js';
import { CONTROL_PREFIX } from '../emulator/emulator-server.js';
import { createLogger } from '../logger.js';
import { EXIT, type CliIo } from './io.js';
import { waitForShutdownSignal } from './signals.js';

const COMMON_COMMANDS: Record<string, string> = {
  state: 'print the emulator state',
  fault: 'inject faults into metadata answers: --status N | --delay-ms MS | --drop, [--count N] [--path /prefix]',
  'clear-faults': 'stop injecting faults',
  reset: 'clear every scheduled event and fault',
};

function help(provider?: ProviderName): string {
  const p = provider ? providerByName(provider) : undefined;
  const commands = { ...(p?.simulateCommands ?? {}), ...COMMON_COMMANDS };
  return `usage:
  spotwatch simulate <${PROVIDERS.join('|')}> [--host H] [--port N] [--instance-id ID]
      serve the cloud's metadata endpoints (and a control API under ${CONTROL_PREFIX}) until SIGINT/SIGTERM
  spotwatch simulate <cloud> <command> [--endpoint URL] [--flag value …]
      drive a running emulator (default endpoint http://127.0.0.1:8111; env SPOTWATCH_SIMULATOR_URL)
${provider ? `\ncommands for ${provider}:\n${Object.entries(commands).map(([n, h]) => `  ${n.padEnd(14)} ${h}`).join('\n')}\n` : ''}`;
}

export async function simulateCommand(argv: string[], io: CliIo): Promise<number> {
  const [cloud, maybeCommand, ...rest] = argv;
  if (!cloud || cloud === '--help' || cloud === '-h') {
    io.stdout.write(help());
    return cloud ? EXIT.ok : EXIT.usage;
  }
  if (!(PROVIDERS as readonly string[]).includes(cloud)) {
    io.stderr.write(`spotwatch simulate: unknown cloud "${cloud}" (one of ${PROVIDERS.join(', ')})\n`);
    return EXIT.usage;
  }
  const provider = providerByName(cloud as ProviderName);
  if (!provider) {
    io.stderr.write(`spotwatch simulate: no emulator for ${cloud} in this build\n`);
    return EXIT.usage;
  }
  if (maybeCommand === '--help' || maybeCommand === '-h') {
    io.stdout.write(help(provider.name));
    return EXIT.ok;
  }
  if (maybeCommand === undefined || maybeCommand.startsWith('-')) {
    return serve(provider.name, argv.slice(1), io);
  }
  const commands = { ...provider.simulateCommands, ...COMMON_COMMANDS };
  if (!(maybeCommand in commands)) {
    io.stderr.write(`spotwatch simulate ${cloud}: unknown command "${maybeCommand}"\n${help(provider.name)}`);
    return EXIT.usage;
  }
  return drive(maybeCommand, rest, io);
}

async function serve(cloud: ProviderName, argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '8111' }, 'instance-id': { type: 'string' } },
    strict: true,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    io.stderr.write(`spotwatch simulate: --port "${values.port}" is not a port number\n`);
    return EXIT.usage;
  }
  const provider = providerByName(cloud)!;
  const logger = createLogger({ name: `simulate-${cloud}` });
  const emulator = await provider.startEmulator({ host: values.host, port, instanceId: values['instance-id'], logger });
  io.stdout.write(`${cloud} metadata emulator listening on ${emulator.url} (control API ${emulator.controlUrl})\n`);
  await waitForShutdownSignal();
  await emulator.close();
  return EXIT.ok;
}

/** `--time-left 30 --drop` → `{ timeLeft: 30, drop: true }`: kebab flags to camelCase keys, numbers and booleans typed. */
export function flagsToBody(args: string[]): { endpoint?: string; body: Record<string, unknown> } {
  const body: Record<string, unknown> = {};
  let endpoint: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument "${arg}" (flags look like --name value)`);
    const [rawName, inline] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const next = args[i + 1];
    let value: string | undefined = inline;
    if (value === undefined && next !== undefined && !next.startsWith('--')) {
      value = next;
      i++;
    }
    if (rawName === 'endpoint') {
      endpoint = value;
      continue;
    }
    const key = rawName.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    body[key] = value === undefined ? true : value === 'true' ? true : value === 'false' ? false : /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
  }
  return { endpoint, body };
}

async function drive(command: string, args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = flagsToBody(args);
  } catch (err) {
    io.stderr.write(`spotwatch simulate: ${(err as Error).message}\n`);
    return EXIT.usage;
  }
  const base = (parsed.endpoint ?? io.env.SPOTWATCH_SIMULATOR_URL ?? 'http://127.0.0.1:8111').replace(/\/+$/, '');
  const url = `${base}${CONTROL_PREFIX}/${command}`;
  let response: Response;
  try {
    response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(parsed.body), signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    io.stderr.write(`spotwatch simulate: cannot reach the emulator at ${base} (${(err as Error).message}); start one with "spotwatch simulate <cloud> --port N" or pass --endpoint\n`);
    return EXIT.failure;
  }
  const text = await response.text();
  if (!response.ok) {
    io.stderr.write(`spotwatch simulate ${command}: ${response.status} ${text.trim()}\n`);
    return response.status < 500 ? EXIT.usage : EXIT.failure;
  }
  io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  return EXIT.ok;
}
