import { createHash } from 'node:crypto';
import { z } from 'zod';
import { controlBody, startEmulatorServer, type MetadataRequest, type MetadataResponse } from '../../src/emulator/emulator-server.js';
import type { EmulatorHandle, EmulatorOptions } from '../../src/provider.js';
import { GCP_METADATA_PREFIX } from './metadata-client.js';

/**
 * `spotwatch simulate gcp`: the GCE metadata server's paths under `/computeMetadata/v1/`, answered for any
 * Host (`metadata.google.internal` or `169.254.169.254`). Like the real one it refuses requests without
 * `Metadata-Flavor: Google` (403) or with `X-Forwarded-For` (403), answers with `Metadata-Flavor: Google` and
 * an `ETag` (a hash of the content), and holds hanging GETs (`wait_for_change=true`, `last_etag`,
 * `timeout_sec`) until the value changes. Faults (503 storms, slowness, dropped connections) come from the
 * shared emulator shell.
 */

export const GCP_SIMULATE_COMMANDS: Record<string, string> = {
  preempt: 'set instance/preempted to TRUE (the VM is being preempted; deadline 30 s)',
  maintenance: 'set instance/maintenance-event: --value NONE|MIGRATE_ON_HOST_MAINTENANCE|TERMINATE_ON_HOST_MAINTENANCE|SHUTDOWN_ON_HOST_MAINTENANCE',
  upcoming: 'announce instance/upcoming-maintenance: [--window-start-in S] [--duration-s S] [--type SCHEDULED|UNSCHEDULED] [--can-reschedule] | --none',
  clear: 'preempted FALSE, maintenance-event NONE, no upcoming maintenance',
};

const DEFAULT_INSTANCE_ID = '4520031799277581759';
const NO_UPCOMING = '{"error": "no notifications have been received yet, try again later"}';
/** Longest a hanging GET is held when the client gives no `timeout_sec`. */
const MAX_HANG_SEC = 3600;

const MAINTENANCE_VALUES = ['NONE', 'MIGRATE_ON_HOST_MAINTENANCE', 'TERMINATE_ON_HOST_MAINTENANCE', 'SHUTDOWN_ON_HOST_MAINTENANCE'] as const;

const maintenanceSchema = z.object({ value: z.enum(MAINTENANCE_VALUES) }).strict();
const upcomingSchema = z
  .object({
    windowStartIn: z.number().int().min(0).max(365 * 86_400).default(3600),
    durationS: z.number().int().min(1).max(86_400).default(3600),
    type: z.enum(['SCHEDULED', 'UNSCHEDULED']).default('SCHEDULED'),
    canReschedule: z.boolean().default(false),
    none: z.boolean().optional(),
  })
  .strict();
const emptySchema = z.object({}).strict();

interface Waiter {
  path: string;
  recursive: boolean;
  lastEtag: string | undefined;
  resolve: () => void;
}

function defaultValues(instanceId: string): Map<string, string> {
  return new Map([
    ['instance/id', instanceId],
    ['instance/name', 'spotwatch-gpu-1'],
    ['instance/hostname', 'spotwatch-gpu-1.us-central1-a.c.spotwatch-demo.internal'],
    ['instance/zone', 'projects/123456789012/zones/us-central1-a'],
    ['instance/machine-type', 'projects/123456789012/machineTypes/a2-highgpu-1g'],
    ['instance/scheduling/preemptible', 'TRUE'],
    ['instance/scheduling/provisioning-model', 'SPOT'],
    ['instance/scheduling/on-host-maintenance', 'TERMINATE'],
    ['instance/scheduling/automatic-restart', 'FALSE'],
    ['instance/preempted', 'FALSE'],
    ['instance/maintenance-event', 'NONE'],
    ['instance/upcoming-maintenance', NO_UPCOMING],
    ['project/project-id', 'spotwatch-demo'],
    ['project/numeric-project-id', '123456789012'],
  ]);
}

export async function startGcpEmulator(options: EmulatorOptions): Promise<EmulatorHandle> {
  const instanceId = options.instanceId ?? DEFAULT_INSTANCE_ID;
  const values = defaultValues(instanceId);
  const waiters = new Set<Waiter>();
  const counters = { requests: 0, hangingGets: 0, refused: 0 };
  const logger = options.logger;

  function set(changes: Record<string, string>): void {
    for (const [key, value] of Object.entries(changes)) values.set(key, value);
    for (const waiter of [...waiters]) {
      if (etagOf(render(waiter.path, waiter.recursive)) !== waiter.lastEtag) waiter.resolve();
    }
  }

  /** The body for `path` (a leaf's value, a directory listing, or the recursive JSON), or undefined: 404. */
  function render(path: string, recursive: boolean): string | undefined {
    const leaf = values.get(path);
    if (leaf !== undefined) return leaf;
    const dir = path === '' || path.endsWith('/') ? path : `${path}/`;
    const below = [...values.keys()].filter((k) => k.startsWith(dir)).sort();
    if (below.length === 0) return undefined;
    if (recursive) return JSON.stringify(tree(below.map((k) => [k.slice(dir.length), values.get(k)!])));
    return [...new Set(below.map((k) => k.slice(dir.length).replace(/\/.*$/s, '/')))].join('\n') + '\n';
  }

  function state() {
    return {
      instanceId,
      values: Object.fromEntries(values),
      etags: { 'instance/preempted': etagOf(values.get('instance/preempted')), 'instance/maintenance-event': etagOf(values.get('instance/maintenance-event')) },
      waiting: waiters.size,
      ...counters,
    };
  }

  async function handleMetadata({ req, url }: MetadataRequest, signal: AbortSignal): Promise<MetadataResponse> {
    counters.requests++;
    const google = { 'metadata-flavor': 'Google', server: 'Metadata Server for VM' };
    if (url.pathname === '/' || url.pathname === '/computeMetadata/' || url.pathname === '/computeMetadata') {
      return { status: 200, headers: { ...google, 'content-type': 'application/text' }, body: 'computeMetadata/\n' };
    }
    if (!url.pathname.startsWith(GCP_METADATA_PREFIX) && url.pathname !== GCP_METADATA_PREFIX.slice(0, -1)) {
      return { status: 404, headers: { ...google, 'content-type': 'text/html; charset=UTF-8' }, body: notFoundPage(url.pathname) };
    }
    if (req.headers['x-forwarded-for'] !== undefined) {
      counters.refused++;
      return { status: 403, headers: { ...google, 'content-type': 'text/html; charset=UTF-8' }, body: forbiddenPage(url.pathname, 'Request denied: X-Forwarded-For header present.') };
    }
    if (req.headers['metadata-flavor'] !== 'Google') {
      counters.refused++;
      return { status: 403, headers: { ...google, 'content-type': 'text/html; charset=UTF-8' }, body: forbiddenPage(url.pathname, 'Missing Metadata-Flavor:Google header.') };
    }
    if (req.method !== 'GET') {
      return { status: 405, headers: { ...google, 'content-type': 'text/plain' }, body: `Method ${req.method ?? ''} not allowed\n` };
    }
    const path = url.pathname.slice(GCP_METADATA_PREFIX.length);
    const q = url.searchParams;
    const recursive = q.get('recursive') === 'true';
    const waitForChange = q.get('wait_for_change') === 'true';
    let timeoutSec = MAX_HANG_SEC;
    if (q.has('timeout_sec')) {
      const raw = q.get('timeout_sec')!;
      if (!/^\d+$/.test(raw) || Number(raw) < 1) {
        return { status: 400, headers: { ...google, 'content-type': 'text/plain' }, body: `Invalid timeout_sec: "${raw}"\n` };
      }
      timeoutSec = Math.min(Number(raw), MAX_HANG_SEC);
    }
    if (render(path, recursive) === undefined) {
      return { status: 404, headers: { ...google, 'content-type': 'text/html; charset=UTF-8' }, body: notFoundPage(url.pathname) };
    }
    if (waitForChange) {
      // `last_etag` differing from the current one (e.g. `0`) answers at once; otherwise hold until a change.
      const lastEtag = q.get('last_etag') ?? etagOf(render(path, recursive));
      if (lastEtag === etagOf(render(path, recursive))) {
        counters.hangingGets++;
        await new Promise<void>((resolve) => {
          const waiter: Waiter = { path, recursive, lastEtag, resolve: () => done() };
          const timer = setTimeout(() => done(), timeoutSec * 1000);
          const onAbort = () => done();
          function done() {
            clearTimeout(timer);
            waiters.delete(waiter);
            signal.removeEventListener('abort', onAbort);
            resolve();
          }
          waiters.add(waiter);
          signal.addEventListener('abort', onAbort, { once: true });
        });
      }
    }
    const body = render(path, recursive);
    if (body === undefined) return { status: 404, headers: { ...google, 'content-type': 'text/html; charset=UTF-8' }, body: notFoundPage(url.pathname) };
    const json = recursive || q.get('alt') === 'json';
    return { status: 200, headers: { ...google, etag: etagOf(body), 'content-type': json ? 'application/json' : 'application/text' }, body };
  }

  const server = await startEmulatorServer({
    host: options.host,
    port: options.port,
    logger,
    handleMetadata,
    control: {
      state,
      reset: (body) => {
        controlBody(emptySchema, body);
        set(Object.fromEntries(defaultValues(instanceId)));
        counters.requests = 0;
        counters.hangingGets = 0;
        counters.refused = 0;
        return state();
      },
      preempt: (body) => {
        controlBody(emptySchema, body);
        set({ 'instance/preempted': 'TRUE' });
        logger?.info('GCE preemption: instance/preempted=TRUE');
        return state();
      },
      maintenance: (body) => {
        const { value } = controlBody(maintenanceSchema, body);
        set({ 'instance/maintenance-event': value });
        logger?.info({ value }, 'instance/maintenance-event changed');
        return state();
      },
      upcoming: (body) => {
        const b = controlBody(upcomingSchema, body);
        if (b.none) {
          set({ 'instance/upcoming-maintenance': NO_UPCOMING });
          return state();
        }
        const start = new Date(Date.now() + b.windowStartIn * 1000);
        set({
          'instance/upcoming-maintenance': JSON.stringify({
            can_reschedule: b.canReschedule,
            latest_window_start_time: start.toISOString(),
            maintenance_status: 'PENDING',
            type: b.type,
            window_end_time: new Date(start.getTime() + b.durationS * 1000).toISOString(),
            window_start_time: start.toISOString(),
          }),
        });
        return state();
      },
      clear: (body) => {
        controlBody(emptySchema, body);
        set({ 'instance/preempted': 'FALSE', 'instance/maintenance-event': 'NONE', 'instance/upcoming-maintenance': NO_UPCOMING });
        return state();
      },
    },
  });

  return {
    url: server.url,
    controlUrl: server.controlUrl,
    close: async () => {
      for (const waiter of [...waiters]) waiter.resolve();
      await server.close();
    },
  };
}

/** GCE-style ETag: 16 hex digits derived from the content (a value that comes back gets its ETag back). */
export function etagOf(body: string | undefined): string {
  return createHash('sha256')
    .update(body ?? '\u0000missing')
    .digest('hex')
    .slice(0, 16);
}

/** `instance/scheduling/preemptible` → `{instance: {scheduling: {preemptible: …}}}`, keys in camelCase as GCE does. */
function tree(entries: [string, string][]): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [path, value] of entries) {
    const parts = path.split('/').map((p) => p.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()));
    let node = root;
    for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
    node[parts[parts.length - 1]!] = value;
  }
  return root;
}

function forbiddenPage(path: string, reason: string): string {
  return `<!DOCTYPE html>\n<html lang=en>\n  <title>Error 403 (Forbidden)!!1</title>\n  <p><b>403.</b> <ins>That's an error.</ins>\n  <p>Your client does not have permission to get URL <code>${escapeHtml(path)}</code> from this server. ${reason} <ins>That's all we know.</ins>\n</html>\n`;
}

function notFoundPage(path: string): string {
  return `<!DOCTYPE html>\n<html lang=en>\n  <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That's an error.</ins>\n  <p>The requested URL <code>${escapeHtml(path)}</code> was not found on this server. <ins>That's all we know.</ins>\n</html>\n`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
