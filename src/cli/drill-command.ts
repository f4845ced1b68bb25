import { parseArgs } from 'node:util';
import { tableArgOptions, tableInput } from '../config.js';
import { describeError } from '../errors.js';
import { CONTROL_PREFIX } from '../emulator/emulator-server.js';
import { DrillError } from '../drill/drill.js';
import { DRILLS } from '../drill/drills.js';
import { CLOUD_OPTIONS, cloudSettings, loadCloudConfig } from '../lookup/cloud-config.js';
import { PROVIDERS, type ProviderName } from '../notice.js';
import { request } from '../util/http-request.js';
import { EXIT, type CliIo } from './io.js';

function help(): string {
  return `usage: spotwatch drill <${PROVIDERS.join('|')}> --instance ID [--yes] [--emulator URL] [cloud options]

Triggers a real interruption test of one instance: Azure simulateEviction (VM or scale-set VM), GCP
simulateMaintenanceEvent, AWS through Fault Injection Service (printed: spotwatch explains the route). With
--emulator, drives a running \`spotwatch simulate <cloud>\` instead.
Dry run by default: prints exactly the requests it would make and makes none. --yes makes them.

${PROVIDERS.map((p) => `${p}:\n${DRILLS[p].help}`).join('\n')}

every cloud option (flag, then environment):
${Object.values(CLOUD_OPTIONS)
  .map((o) => `  ${o.flag.padEnd(24)} ${o.env.join(', ')}`)
  .join('\n')}
`;
}

export async function drillCommand(argv: string[], io: CliIo): Promise<number> {
  const [cloud, ...rest] = argv;
  if (!cloud || cloud === '--help' || cloud === '-h') {
    io.stdout.write(help());
    return cloud ? EXIT.ok : EXIT.usage;
  }
  if (!(PROVIDERS as readonly string[]).includes(cloud)) {
    io.stderr.write(`spotwatch drill: unknown cloud "${cloud}" (one of ${PROVIDERS.join(', ')})\n`);
    return EXIT.usage;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { ...tableArgOptions(CLOUD_OPTIONS), instance: { type: 'string' }, yes: { type: 'boolean' }, emulator: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (err) {
    io.stderr.write(`spotwatch drill: ${describeError(err)}\n`);
    return EXIT.usage;
  }
  if (values.help) {
    io.stdout.write(help());
    return EXIT.ok;
  }
  const instance = values.instance?.trim();
  if (!instance) {
    io.stderr.write(`spotwatch drill ${cloud}: --instance is required\n`);
    return EXIT.usage;
  }
  const drill = DRILLS[cloud as ProviderName];
  const out = (line: string) => io.stdout.write(`${line}\n`);
  const act = values.yes === true;

  if (values.emulator !== undefined) {
    let base: URL;
    try {
      base = new URL(values.emulator);
      if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('not http(s)');
    } catch {
      io.stderr.write(`spotwatch drill ${cloud}: --emulator "${values.emulator}" is not an http(s) URL\n`);
      return EXIT.usage;
    }
    const step = drill.emulator(instance);
    const url = `${base.href.replace(/\/+$/, '')}${CONTROL_PREFIX}/${step.command}`;
    const body = JSON.stringify(step.body);
    if (!act) {
      out(`dry run: would call (emulator: ${step.description}):\n  POST ${url}\n    body: ${body}\nAdd --yes to call it.`);
      return EXIT.ok;
    }
    const response = await request(url, { method: 'POST', body, headers: { 'content-type': 'application/json' }, timeoutMs: 5000 });
    if (response.status < 200 || response.status >= 300) {
      io.stderr.write(`spotwatch drill ${cloud}: the emulator answered ${response.status}: ${response.body.trim().slice(0, 500)}\n`);
      return EXIT.failure;
    }
    out(`POST ${url} → ${response.status}: ${step.description} for ${instance}`);
    return EXIT.ok;
  }

  const { config } = loadCloudConfig(tableInput(CLOUD_OPTIONS, values), io.env);
  try {
    await drill.cloud({ instance, settings: cloudSettings(config), act, out });
  } catch (err) {
    if (err instanceof DrillError) {
      io.stderr.write(`spotwatch drill ${cloud}: ${err.message}\n`);
      return EXIT.usage;
    }
    io.stderr.write(`spotwatch drill ${cloud}: the cloud refused or could not be reached: ${describeError(err)}\n`);
    return EXIT.failure;
  }
  return EXIT.ok;
}
