import { describeError, SpotwatchError } from '../errors.js';
import { EXIT, processIo, type CliIo } from './io.js';
type Command = (argv: string[], io: CliIo) => Promise<number>;

/**
 * Each command's module loads only when that command runs: the agent (a long-running process on every node)
 * does not carry the webhook's, the drills' or the demo's code in memory.
 */
const COMMANDS: Record<string, { load: () => Promise<Command>; summary: string }> = {
  agent: { load: async () => (await import('./agent-command.js')).agentCommand, summary: 'watch this node for interruption notices and enqueue them' },
  parse: { load: async () => (await import('./parse-command.js')).parseCommand, summary: 'turn one metadata document or cloud event (stdin) into Notices (stdout)' },
  simulate: { load: async () => (await import('./simulate-command.js')).simulateCommand, summary: 'serve a cloud metadata emulator, or drive a running one' },
  run: { load: async () => (await import('./run-command.js')).runCommand, summary: "start a process under the local agent's care (or register one by --pid)" },
  restore: { load: async () => (await import('./restore-command.js')).restoreCommand, summary: 'restore a task the checkpoint-to-storage fallback saved, on this node' },
  tasks: { load: async () => (await import('./status-command.js')).tasksCommand, summary: 'list the tasks in the registry' },
  status: { load: async () => (await import('./status-command.js')).statusCommand, summary: 'nodes, tasks, migrations in flight and finished' },
  demo: { load: async () => (await import('./demo-command.js')).demoCommand, summary: 'local demo: two nodes, the toy LLM, a spot interruption, the migration' },
  webhook: {
    load: async () => (await import('./webhook-command.js')).webhookCommand,
    summary: 'receive cloud event-bridge deliveries (EventBridge, SNS, Pub/Sub, Event Grid) and enqueue their notices',
  },
  drill: { load: async () => (await import('./drill-command.js')).drillCommand, summary: 'trigger a real interruption test of one instance (dry run unless --yes), or drive an emulator' },
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
    return await (await command.load())(rest, io);
  } catch (err) {
    io.stderr.write(`spotwatch ${name}: ${describeError(err)}\n`);
    return err instanceof SpotwatchError && (err.code === 'CONFIG_INVALID' || err.code === 'USAGE') ? EXIT.usage : EXIT.failure;
  }
}
