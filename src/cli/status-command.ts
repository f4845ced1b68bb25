import type { MigrationRecord, NodeState, TaskRecord } from '../registry/types.js';
import { EXIT, type CliIo } from './io.js';
import { openRegistry, parseClientArgs } from './client-config.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function table(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return '  (none)\n';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd();
  return `${[line(headers), ...rows.map(line)].join('\n')}\n`;
}

const size = (bytes: number) => (bytes >= GiB ? `${(bytes / GiB).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`);
const secs = (ms: number | undefined) => (ms === undefined ? '—' : ms < 10_000 ? `${(Math.round(ms / 10) / 100).toFixed(2)} s` : `${(Math.round(ms / 100) / 10).toFixed(1)} s`);

/** A span of time, coarse enough to read at a glance: `45s`, `1m12s`, `2h05m`. */
export function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * The DRAINING cell: `no`, or why and until when — `yes (<notice id>, deadline in 1m12s)`; a deadline that has
 * passed shows as `deadline 3m05s ago`, a notice without one as `since 40s` (when the drain was set). A drain
 * for another instance than the node's own (its node id was reused; the agent lifts it on its next tick) says
 * `for <instance>`. Drains set by an older spotwatch record only the notice id.
 */
export function drainingCell(n: NodeState, now: number): string {
  if (!n.draining) return 'no';
  const parts = [n.noticeId || 'no notice'];
  const d = n.drain;
  if (d?.instanceId && d.instanceId !== n.instanceId) parts.push(`for ${d.instanceId}`);
  if (d?.deadline !== undefined) parts.push(d.deadline >= now ? `deadline in ${span(d.deadline - now)}` : `deadline ${span(now - d.deadline)} ago`);
  else if (d?.since !== undefined) parts.push(`since ${span(now - d.since)}`);
  return `yes (${parts.join(', ')})`;
}

/** `[#####-----] 52%` of bytes sent against the estimate. */
export function progressBar(done: number, total: number, width = 20): string {
  const ratio = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(ratio * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.round(ratio * 100)}%`;
}

export function renderTasks(tasks: TaskRecord[]): string {
  return table(
    ['TASK', 'NODE', 'PID', 'STATE', 'MEMORY', 'GPU MEM', 'PRIO', 'FALLBACK', 'MIGRATIONS', 'COMMAND'],
    tasks.map((t) => [t.id, t.nodeId, String(t.pid), t.state, size(t.memBytes), t.gpuMemBytes ? size(t.gpuMemBytes) : '—', String(t.priority), t.fallback, String(t.migrations), t.command.join(' ').slice(0, 40)]),
  );
}

export function renderStatus(nodes: (NodeState & { reserved: number })[], tasks: TaskRecord[], migrations: MigrationRecord[], now = Date.now()): string {
  const inflight = migrations.filter((m) => !m.outcome);
  const finished = migrations.filter((m) => m.outcome);
  return [
    'NODES\n',
    table(
      ['NODE', 'HEALTH', 'DRAINING', 'LIFECYCLE', 'POOL', 'FREE MEMORY', 'RESERVED', 'GPU', 'HEARTBEAT'],
      nodes.map((n) => [
        n.id,
        n.healthy ? 'healthy' : 'stale',
        drainingCell(n, now),
        n.lifecycle,
        n.capacityPool,
        size(n.memFreeBytes),
        size(n.reserved),
        n.gpuCount ? `${n.gpuCount}× ${n.gpuModel} (${size(n.gpuFreeBytes)} free)` : '—',
        `${((now - n.heartbeatAt) / 1000).toFixed(1)} s ago`,
      ]),
    ),
    '\nTASKS\n',
    renderTasks(tasks),
    '\nMIGRATIONS IN FLIGHT\n',
    table(
      ['MIGRATION', 'TASK', 'FROM → TO', 'PHASE', 'PROGRESS', 'ELAPSED', 'TIME LEFT'],
      inflight.map((m) => [
        m.id,
        m.taskId,
        `${m.sourceNodeId} → ${m.targetNodeId || '?'}`,
        m.phase,
        `${progressBar(m.bytesSent, m.estimatedBytes)} ${size(m.bytesSent)}/${size(m.estimatedBytes)}`,
        secs(now - m.plannedAt),
        m.deadline ? secs(m.deadline - now) : '—',
      ]),
    ),
    '\nFINISHED MIGRATIONS\n',
    table(
      ['MIGRATION', 'TASK', 'FROM → TO', 'OUTCOME', 'DOWNTIME', 'TOTAL', 'MARGIN', 'MOVED', 'REASON'],
      finished.map((m) => [
        m.id,
        m.taskId,
        `${m.sourceNodeId} → ${m.targetNodeId || '—'}`,
        m.outcome ?? '',
        secs(m.downtimeMs),
        secs(m.finishedAt !== undefined ? m.finishedAt - m.plannedAt : undefined),
        secs(m.marginMs),
        // What the task staged went before the freeze, what the target pulled (post-copy) after it: each shown beside
        // what moved in the freeze.
        m.stagedBytes
          ? `${size(m.bytesSent)} +${size(m.stagedBytes)} staged`
          : m.postCopyBytes
            ? `${size(m.bytesSent - m.postCopyBytes)} +${size(m.postCopyBytes)} pulled`
            : size(m.bytesSent),
        (m.reason ?? '').slice(0, 60),
      ]),
    ),
  ].join('');
}

export async function tasksCommand(argv: string[], io: CliIo): Promise<number> {
  const { values, config } = parseClientArgs(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, io);
  if (values.help) {
    io.stdout.write('usage: spotwatch tasks [--json]  (and --redis-url, --queue-prefix)\n\nLists every task in the registry.\n');
    return EXIT.ok;
  }
  const registry = openRegistry(config);
  try {
    const tasks = await registry.listTasks();
    io.stdout.write(values.json ? `${JSON.stringify(tasks)}\n` : renderTasks(tasks));
    return EXIT.ok;
  } finally {
    await registry.close();
  }
}

export async function statusCommand(argv: string[], io: CliIo): Promise<number> {
  const { values, config } = parseClientArgs(argv, { json: { type: 'boolean' }, limit: { type: 'string', default: '20' }, help: { type: 'boolean', short: 'h' } }, io);
  if (values.help) {
    io.stdout.write('usage: spotwatch status [--json] [--limit N]  (and --redis-url, --queue-prefix)\n\nNodes, tasks, migrations in flight with progress, and finished migrations with their timings.\n');
    return EXIT.ok;
  }
  const registry = openRegistry(config);
  try {
    const nodes = await Promise.all((await registry.listNodes()).map(async (n) => ({ ...n, reserved: (await registry.reservedOn(n.id)).memBytes })));
    const tasks = await registry.listTasks();
    const migrations = await registry.recentMigrations(Number(values.limit) || 20);
    io.stdout.write(values.json ? `${JSON.stringify({ nodes, tasks, migrations })}\n` : renderStatus(nodes, tasks, migrations));
    return EXIT.ok;
  } finally {
    await registry.close();
  }
}
