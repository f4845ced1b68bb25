import { describeError, SpotwatchError } from '../errors.js';
import { EXIT, processIo, type CliIo } from './io.js';
import { parseCommand } from './parse-command.js';
import { simulateCommand } from './simulate-command.js';
import { agentCommand } from './agent-command.js';
import { demoCommand } from './demo-command.js';
import { webhookCommand } from './webhook-command.js';
import { drillCommand } from './drill-command.js';
import { runCommand } from './run-command.js';
import { statusCommand, tasksCommand } from './status-command.js';

type Command = (argv: string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, { run: Command; summary: string }> = {
  agent: { run: agentCommand, summary: 'watch this node for interruption notices and enqueue them' },
  parse: { run: parseCommand, summary: 'turn one metadata document or cloud event (stdin) into Notices (stdout)' },
  simulate: { run: simulateCommand, summary: 'serve a cloud metadata emulator, or drive a running one' },
  run: { run: runCommand, summary: 'start a process under the local agent\'s care (or register one by --pid)' },
  tasks: { run: tasksCommand, summary: 'list the tasks in the registry' },
  status: { run: statusCommand, summary: 'nodes, tasks, migrations in flight and finished' },
  demo: { run: demoCommand, summary: 'local demo: Redis, an emulator and an agent; fires a spot interruption' },
  webhook: { run: webhookCommand, summary: 'receive cloud event-bridge deliveries (EventBridge, SNS, Pub/Sub, Event Grid) and enqueue their notices' },
  drill: { run: drillCommand, summary: 'trigger a real interruption test of one instance (dry run unless --yes), or drive an emulator' },
};

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return `usage: spotwatch <command> [options]   (spotwatch <command> --help for its options)

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}
`;
}

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(usage());
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.stderr.write(`spotwatch: unknown command "${name}"\n\n${usage()}`);
    return EXIT.usage;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    io.stderr.write(`spotwatch ${name}: ${describeError(err)}\n`);
    return err instanceof SpotwatchError && (err.code === 'CONFIG_INVALID' || err.code === 'USAGE') ? EXIT.usage : EXIT.failure;
  }
}
