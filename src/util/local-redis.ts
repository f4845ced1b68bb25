import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { SpotwatchError } from '../errors.js';
import { freePort } from './free-port.js';

/**
 * A throwaway `redis-server` on loopback, for the local demo, tests and benchmarks. It never touches a
 * Redis it did not start: it binds a fresh free port and keeps its data in its own temporary directory.
 */
export class LocalRedis {
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly binary: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(options: { port?: number; binary?: string } = {}): Promise<LocalRedis> {
    const binary = options.binary ?? process.env.SPOTWATCH_REDIS_SERVER ?? 'redis-server';
    const probe = spawnSync(binary, ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      throw new SpotwatchError(
        'REDIS_BINARY_MISSING',
        `cannot run "${binary}": install Redis (Debian/Ubuntu: sudo apt-get install redis-server) or set REDIS_URL to a Redis you already run`,
        { cause: probe.error },
      );
    }
    const port = options.port ?? (await freePort());
    const redis = new LocalRedis(port, mkdtempSync(join(tmpdir(), 'spotwatch-redis-')), binary);
    await redis.launch();
    return redis;
  }

  /** Stops the server (SIGTERM), waiting for it to exit. Data in its directory is kept for `restart`. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
    this.child = undefined;
  }

  /** Starts the server again on the same port with the same data. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--dir', this.dir,
      '--save', '',
      '--appendonly', 'yes',
      '--appendfsync', 'always',
      '--daemonize', 'no',
      '--loglevel', 'warning',
    ];
    const child = spawn(this.binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) {
        throw new SpotwatchError('REDIS_UNAVAILABLE', `redis-server exited at start (code ${child.exitCode}): ${stderr.trim()}`);
      }
      if (await canConnect(this.port)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    child.kill('SIGKILL');
    throw new SpotwatchError('REDIS_UNAVAILABLE', `redis-server did not listen on port ${this.port} within 10 s: ${stderr.trim()}`);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
