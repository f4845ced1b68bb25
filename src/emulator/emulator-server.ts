import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { z } from 'zod';
import { describeError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';

/**
 * The HTTP shell every metadata emulator shares: the cloud's own paths are the provider's business; this
 * module adds the control API (`/_spotwatch/v1/…`) and fault injection (error statuses, slowness,
 * dropped connections), so `spotwatch simulate <cloud> <command>` works the same for every cloud.
 */
export const CONTROL_PREFIX = '/_spotwatch/v1';

export const faultSchema = z
  .object({
    /** Answer with this HTTP status instead of the real answer. */
    status: z.number().int().min(400).max(599).optional(),
    /** Wait this long before answering (the real or the error answer). */
    delayMs: z.number().int().min(0).max(600_000).optional(),
    /** Destroy the connection without answering. */
    drop: z.boolean().optional(),
    /** How many metadata requests the fault applies to; absent: until cleared. */
    count: z.number().int().min(1).optional(),
    /** Only requests whose path starts with this (e.g. `/latest/api/token`). */
    path: z.string().startsWith('/').optional(),
  })
  .strict()
  .refine((f) => f.status !== undefined || f.delayMs !== undefined || f.drop === true, 'give at least one of status, delayMs, drop');

export type Fault = z.infer<typeof faultSchema>;

export interface MetadataRequest {
  req: IncomingMessage;
  url: URL;
  body: string;
}

export interface MetadataResponse {
  status: number;
  headers?: Record<string, string>;
  body: string;
}

/** A control command: validates its JSON body and returns the JSON to answer with. Throw ControlError for 4xx. */
export type ControlHandler = (body: unknown) => unknown;

export class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface EmulatorServerOptions {
  host: string;
  port: number;
  logger?: Logger | undefined;
  /** Answers a cloud metadata request. May resolve late (hanging GETs); `signal` aborts when the client goes away. */
  handleMetadata(request: MetadataRequest, signal: AbortSignal): Promise<MetadataResponse> | MetadataResponse;
  /** Control commands by name (`POST /_spotwatch/v1/<name>`); `state` is served on GET too. */
  control: Record<string, ControlHandler>;
}

export interface RunningEmulatorServer {
  url: string;
  controlUrl: string;
  close(): Promise<void>;
}

/** Parses a control body with a zod schema, turning validation problems into one 400 message. */
export function controlBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body ?? {});
  if (!parsed.success) {
    throw new ControlError(400, parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

export async function startEmulatorServer(options: EmulatorServerOptions): Promise<RunningEmulatorServer> {
  const logger = options.logger ?? silentLogger;
  let fault: (Fault & { remaining?: number }) | undefined;
  const sockets = new Set<Socket>();

  const control: Record<string, ControlHandler> = {
    ...options.control,
    fault: (body) => {
      const parsed = controlBody(faultSchema, body);
      fault = { ...parsed, remaining: parsed.count };
      return { fault: parsed };
    },
    'clear-faults': () => {
      fault = undefined;
      return { fault: null };
    },
  };
  // `reset` clears the provider's scheduled events (its own handler) and the faults (held here).
  const providerReset = options.control.reset;
  if (providerReset) {
    control.reset = (body) => {
      const answer = providerReset(body);
      fault = undefined;
      return answer;
    };
  }

  const server: Server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      logger.error({ err: describeError(err) }, 'emulator request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal emulator error\n');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://emulator');
    const body = await readBody(req);
    if (url.pathname.startsWith(`${CONTROL_PREFIX}/`)) {
      handleControl(req, res, url.pathname.slice(CONTROL_PREFIX.length + 1), body);
      return;
    }
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    const active = fault && (!fault.path || url.pathname.startsWith(fault.path)) ? fault : undefined;
    if (active) {
      if (active.remaining !== undefined && --active.remaining <= 0) fault = undefined;
      if (active.delayMs) await sleep(active.delayMs, abort.signal);
      if (active.drop) {
        req.socket.destroy();
        return;
      }
      if (active.status) {
        res.writeHead(active.status, { 'content-type': 'text/plain' });
        res.end(`injected fault: HTTP ${active.status}\n`);
        return;
      }
    }
    const answer = await options.handleMetadata({ req, url, body }, abort.signal);
    if (res.destroyed) return;
    res.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers });
    res.end(answer.body);
  }

  function handleControl(req: IncomingMessage, res: ServerResponse, name: string, body: string): void {
    const handler = control[name];
    const allowed = req.method === 'POST' || (req.method === 'GET' && name === 'state');
    let status = 200;
    let answer: unknown;
    if (!handler) {
      status = 404;
      answer = { error: `unknown control command "${name}"; known: ${Object.keys(control).join(', ')}` };
    } else if (!allowed) {
      status = 405;
      answer = { error: `use POST for ${name}` };
    } else {
      try {
        const json: unknown = body.trim() === '' ? {} : JSON.parse(body);
        answer = handler(json);
      } catch (err) {
        status = err instanceof ControlError ? err.status : 400;
        answer = { error: err instanceof Error ? err.message : String(err) };
      }
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(answer)}\n`);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  return {
    url,
    controlUrl: `${url}${CONTROL_PREFIX}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) throw new ControlError(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
