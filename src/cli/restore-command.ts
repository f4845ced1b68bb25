import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CriuEngine } from '../engines/criu/index.js';
import { CudaCheckpointHook } from '../engines/cuda/index.js';
import { EXIT, type CliIo } from './io.js';
import { openRegistry, parseClientArgs } from './client-config.js';

const HELP = `usage: spotwatch restore --migration ID [--image DIR] [--task ID]

Restores a task that the checkpoint-to-storage fallback saved (its node was reclaimed before it could be
migrated) on this node, and moves the task to this node in the registry (--node-id, default the hostname).
--image defaults to <--storage-dir>/<migration id>; mount the same durable storage on the new node.
Plus --redis-url, --queue-prefix, --node-id, --storage-dir (flags or environment, as for the agent).
`;

export async function restoreCommand(argv: string[], io: CliIo): Promise<number> {
  const { values, config } = parseClientArgs(argv, { migration: { type: 'string' }, image: { type: 'string' }, task: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, io);
  if (values.help) {
    io.stdout.write(HELP);
    return EXIT.ok;
  }
  const fail = (message: string, code: number = EXIT.usage) => {
    io.stderr.write(`spotwatch restore: ${message}\n`);
    return code;
  };
  const migrationId = values.migration as string | undefined;
  if (!migrationId) return fail('--migration is required (spotwatch status lists migrations and their fallbacks)');
  const image = (values.image as string | undefined) ?? join(config.storageDir, migrationId);
  if (!existsSync(image)) return fail(`no image at ${image}; pass --image or mount the storage the source wrote to`);
  const nodeId = config.nodeId ?? hostname();
  const registry = openRegistry(config);
  try {
    const migration = await registry.getMigration(migrationId);
    const taskId = (values.task as string | undefined) ?? migration?.taskId;
    const task = taskId ? await registry.getTask(taskId) : undefined;
    if (!task) return fail(`migration ${migrationId} names no task in the registry; pass --task ID`);
    if (task.state === 'running') return fail(`task ${task.id} is already running on ${task.nodeId} (pid ${task.pid})`);
    const engine = new CriuEngine({ hooks: [new CudaCheckpointHook()] });
    const result = await engine.restore({ migrationId, source: { kind: 'directory', path: image }, deadline: Date.now() + 30 * 60_000 });
    if (result.status !== 'ok' || result.value.task.kind !== 'process') {
      const why = result.status === 'ok' ? 'restored something that is not a process' : `${result.code}: ${result.message}`;
      return fail(`restore of ${task.id} from ${image} failed: ${why}`, EXIT.failure);
    }
    const pid = result.value.task.pid;
    await registry.updateTask(task.id, { nodeId, pid, state: 'running', migrations: task.migrations + 1 });
    await registry.updateMigration(migrationId, { reason: `${migration?.reason ?? ''}; restored from storage on ${nodeId} as pid ${pid}`, newPid: pid });
    io.stdout.write(`${JSON.stringify({ task: task.id, pid, nodeId, image, phases: result.value.phases })}\n`);
    return EXIT.ok;
  } finally {
    await registry.close();
  }
}
