import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface ReadinessCheck {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export interface OpsServerOptions {
  host: string;
  port: number;
  registry: Registry;
  readiness: () => Promise<ReadinessCheck>;
  logger: Logger;
}

export interface OpsServer {
  port: number;
  close(): Promise<void>;
}

/** `/healthz` (the process answers), `/readyz` (it can do its job), `/metrics` (Prometheus text format). */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    const reply = (status: number, contentType: string, body: string) => {
      res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'text/plain', 'method not allowed\n');
    if (path === '/healthz') return reply(200, 'application/json', '{"status":"ok"}\n');
    if (path === '/readyz') {
      options
        .readiness()
        .then((r) => reply(r.ready ? 200 : 503, 'application/json', `${JSON.stringify({ status: r.ready ? 'ready' : 'not ready', checks: r.checks })}\n`))
        .catch((err: unknown) => reply(503, 'application/json', `${JSON.stringify({ status: 'not ready', error: describeError(err) })}\n`));
      return;
    }
    if (path === '/metrics') {
      options.registry
        .metrics()
        .then((text) => reply(200, options.registry.contentType, text))
        .catch((err: unknown) => reply(500, 'text/plain', `${describeError(err)}\n`));
      return;
    }
    reply(404, 'text/plain', 'not found: try /healthz, /readyz or /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ host: options.host, port }, 'ops server listening (/healthz, /readyz, /metrics)');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
