import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import type { TaskControl } from '../engines/checkpoint-engine.js';
import { estimateImageBytes, firstChild, pidExists } from '../engines/criu/proc.js';
import { FALLBACKS, type Fallback, type TaskRecord } from '../registry/types.js';
import { EXIT, type CliIo } from './io.js';
import { openRegistry, parseClientArgs } from './client-config.js';

const HELP = `usage: spotwatch run [--id ID] [--priority N] [--mem-hint MiB] [--gpu-mem MiB] [--fallback F] [--log FILE]
                     [--prepare-url URL] [--resume-url URL] [--releasable-mib N]
                     [--stage-url URL] [--staged-mib N] [--pid-namespace] -- CMD ARGS…
       spotwatch run --pid PID [--id ID] [--priority N] …

Starts CMD under the local agent's care — in its own session, stdin from /dev/null and stdout/stderr to
--log (never a terminal), so CRIU can checkpoint it — and registers it as a task of this node (--node-id,
default the hostname). With --pid, registers a process that is already running instead.

  --fallback   what to do when the task cannot be migrated before the deadline:
               checkpoint-to-storage (default), stop, none
  --priority   higher first when several tasks share a notice (default 0)
  --mem-hint   memory of the task in MiB, until the agent measures it
  --pod        namespace/name of the Kubernetes pod the task runs in (default: POD_NAMESPACE/POD_NAME
               from the environment); the agent never evicts a pod whose task it migrates
  --prepare-url, --resume-url
               http endpoints of a task that cooperates with its checkpoints: the agent POSTs
               {"event":"prepare",...} before the checkpoint (stop at a step boundary, release what you can
               reload — caches, weights on local disk) and {"event":"resume",...} once the task runs again
               (after the restore, or on the source when the checkpoint did not happen)
  --releasable-mib
               how much the task releases on prepare (and reloads on resume): planning and the
               engine's deadline check leave it out of the bytes to move
  --stage-url  pre-copy with the task's help: before the checkpoint, while the task keeps working, the
               agent POSTs {"event":"stage","directory":…}; the task writes state that will not change
               any more (a KV cache's filled prefix) as files there and the agent sends them to the
               target ahead of the freeze. Prepare then names "stagedDirectory" (release what you
               staged), resume names where the staged files are on the node the task runs on.
               Needs --prepare-url and --resume-url
  --staged-mib how much the task writes when it stages (planning counts its transfer time)
  --pid-namespace
               run CMD as pid 1 of a pid namespace of its own (unshare --pid --fork), as a container's
               process is: its restore gets a new namespace, so its pids never conflict where it lands,
               and post-copy works between agents on one machine (the source holds the pids meanwhile)
  plus --redis-url, --queue-prefix, --node-id (flags or environment, as for the agent)
`;

export async function runCommand(argv: string[], io: CliIo): Promise<number> {
  const separator = argv.indexOf('--');
  const own = separator >= 0 ? argv.slice(0, separator) : argv;
  const command = separator >= 0 ? argv.slice(separator + 1) : [];
  const { values, config } = parseClientArgs(
    own,
    {
      id: { type: 'string' },
      priority: { type: 'string', default: '0' },
      'mem-hint': { type: 'string' },
      'gpu-mem': { type: 'string' },
      fallback: { type: 'string', default: 'checkpoint-to-storage' },
      log: { type: 'string' },
      pid: { type: 'string' },
      pod: { type: 'string' },
      'prepare-url': { type: 'string' },
      'resume-url': { type: 'string' },
      'releasable-mib': { type: 'string' },
      'stage-url': { type: 'string' },
      'staged-mib': { type: 'string' },
      'pid-namespace': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    io,
  );
  if (values.help) {
    io.stdout.write(HELP);
    return EXIT.ok;
  }
  const fail = (message: string) => {
    io.stderr.write(`spotwatch run: ${message}\n`);
    return EXIT.usage;
  };
  const priority = Number(values.priority);
  if (!Number.isInteger(priority)) return fail(`--priority "${String(values.priority)}" is not a whole number`);
  const fallback = String(values.fallback) as Fallback;
  if (!FALLBACKS.includes(fallback)) return fail(`--fallback must be one of ${FALLBACKS.join(', ')}`);
  const mib = (name: string) => (values[name] === undefined ? undefined : Number(values[name]) * 1024 * 1024);
  for (const name of ['mem-hint', 'gpu-mem']) {
    const v = mib(name);
    if (v !== undefined && !(v >= 0)) return fail(`--${name} "${String(values[name])}" is not a size in MiB`);
  }
  if (values.pid === undefined && command.length === 0) return fail('give the command after --, or --pid PID');
  if (values.pid !== undefined && command.length > 0) return fail('give either --pid or a command, not both');

  const nodeId = config.nodeId ?? hostname();
  const pod = (values.pod as string | undefined) ?? (io.env.POD_NAMESPACE && io.env.POD_NAME ? `${io.env.POD_NAMESPACE}/${io.env.POD_NAME}` : undefined);
  if (pod !== undefined && !/^[a-z0-9][-a-z0-9]*\/[a-z0-9][-.a-z0-9]*$/.test(pod)) return fail(`--pod "${pod}" is not namespace/name`);
  const control: TaskControl = {};
  for (const [flag, key] of [['prepare-url', 'prepareUrl'], ['resume-url', 'resumeUrl'], ['stage-url', 'stageUrl']] as const) {
    const url = values[flag] as string | undefined;
    if (url === undefined) continue;
    if (!URL.canParse(url) || new URL(url).protocol !== 'http:') return fail(`--${flag} "${url}" is not an http:// URL (the task's own endpoint on this node)`);
    control[key] = url;
  }
  if (values['releasable-mib'] !== undefined) {
    const bytes = mib('releasable-mib');
    if (bytes === undefined || !(bytes >= 0)) return fail(`--releasable-mib "${String(values['releasable-mib'])}" is not a size in MiB`);
    if (!control.prepareUrl) return fail('--releasable-mib needs --prepare-url (the task releases that memory when it is told to prepare)');
    control.releasableBytes = bytes;
  }
  if (control.stageUrl && !(control.prepareUrl && control.resumeUrl)) {
    return fail('--stage-url needs --prepare-url and --resume-url (prepare says the target holds the staged files, resume where they are)');
  }
  if (values['staged-mib'] !== undefined) {
    const bytes = mib('staged-mib');
    if (bytes === undefined || !(bytes >= 0)) return fail(`--staged-mib "${String(values['staged-mib'])}" is not a size in MiB`);
    if (!control.stageUrl) return fail('--staged-mib needs --stage-url');
    control.stagedBytes = bytes;
  }
  const id = (values.id as string | undefined) ?? `task-${Date.now().toString(36)}`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) return fail(`--id "${id}" may only use letters, digits, ".", "_" and "-" (up to 64)`);
  const logPath = (values.log as string | undefined) ?? join(dirname(config.spoolPath), 'tasks', `${id}.log`);
  let pid: number;
  if (values.pid !== undefined) {
    pid = Number(values.pid);
    if (!Number.isInteger(pid) || pid <= 1 || !pidExists(pid)) return fail(`--pid ${String(values.pid)}: no such process`);
  } else {
    mkdirSync(dirname(logPath), { recursive: true });
    const out = openSync(logPath, 'a');
    try {
      const inNamespace = values['pid-namespace'] === true;
      // In a pid namespace: unshare stays outside as the parent; the task is its child, pid 1 inside, and leads a
      // session of its own there (CRIU needs a namespace's session leaders inside it).
      const line = inNamespace ? ['unshare', '--pid', '--fork', 'setsid', ...command] : command;
      const child = spawn(line[0]!, line.slice(1), { detached: true, stdio: ['ignore', out, out] });
      const spawned = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid!));
        child.once('error', reject);
      }).catch((err: Error) => err);
      if (spawned instanceof Error) return fail(`cannot start ${line[0]}: ${spawned.message}`);
      child.unref();
      pid = inNamespace ? await firstChild(spawned, 5000) : spawned;
      if (pid <= 0) return fail(`${command[0]} did not start in its pid namespace (see ${logPath})`);
    } finally {
      closeSync(out);
    }
  }
  const registry = openRegistry(config);
  try {
    if (await registry.getTask(id)) {
      const existing = await registry.getTask(id);
      if (existing && existing.state === 'running' && pidExists(existing.pid) && existing.nodeId === nodeId) return fail(`task ${id} already exists and is running (pid ${existing.pid})`);
    }
    const task: TaskRecord = {
      id,
      nodeId,
      pid,
      engine: 'criu',
      memBytes: mib('mem-hint') ?? (await estimateImageBytes(pid).catch(() => 0)),
      gpuMemBytes: mib('gpu-mem') ?? 0,
      // A GPU task moves only to the same GPU model: this node's, as its agent heartbeats it.
      gpuModel: mib('gpu-mem') ? ((await registry.getNode(nodeId))?.gpuModel ?? '') : '',
      priority,
      fallback,
      state: 'running',
      command: command.length > 0 ? command : [`pid:${pid}`],
      logPath: values.pid !== undefined ? '' : logPath,
      ...(pod ? { pod } : {}),
      ...(Object.keys(control).length ? { control } : {}),
      startedAt: Date.now(),
      updatedAt: Date.now(),
      migrations: 0,
      lastMigrationId: '',
    };
    await registry.putTask(task);
    io.stdout.write(`${JSON.stringify({ id, pid, nodeId, log: task.logPath || undefined })}\n`);
    return EXIT.ok;
  } finally {
    await registry.close();
  }
}

