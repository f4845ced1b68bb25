/**
 * Connections for image streams between agents. An image stream is plain bytes on a `Duplex` (see
 * image-stream.ts), so anything that yields a `Duplex` can carry it: plain TCP today, and — through the
 * {@link Authenticator} seam — a connection that has passed the agents' shared-token handshake, or a
 * `tls.TLSSocket`. The engine never opens connections itself: it asks an {@link ImageSink} (source side) and is
 * handed accepted connections (target side, {@link listenForImageStreams}).
 */
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ImageSink } from '../checkpoint-engine.js';
import { FRAME } from './image-stream.js';
import { isPlainSocket, offerPageChannel } from './page-channel.js';

/**
 * Turns a freshly connected socket into the authenticated connection the image stream runs on, or throws.
 * Runs on both sides (`role` says which). The default does nothing: authentication between agents is added
 * later (shared cluster token, then TLS), here and nowhere else.
 */
export type Authenticator = (socket: Socket, role: 'client' | 'server', signal: AbortSignal) => Promise<Duplex>;

export const noAuthentication: Authenticator = async (socket) => socket;

export interface TcpEndpoint {
  host: string;
  port: number;
}

/** Opens a TCP connection, honouring `signal`. */
export function openTcp(endpoint: TcpEndpoint, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Error('aborted before connecting'));
      return;
    }
    const socket = connect({ host: endpoint.host, port: endpoint.port });
    const onAbort = (): void => {
      socket.destroy();
      reject(new Error(`connecting to ${endpoint.host}:${endpoint.port} aborted`));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(new Error(`cannot connect to ${endpoint.host}:${endpoint.port}: ${err.message}`, { cause: err }));
    });
  });
}

/** An {@link ImageSink} that connects to `endpoint` over TCP and authenticates with `authenticate`. */
export function tcpImageSink(endpoint: TcpEndpoint, authenticate: Authenticator = noAuthentication, label?: string): ImageSink {
  return {
    describe: label ?? `${endpoint.host}:${endpoint.port}`,
    async open(signal: AbortSignal): Promise<Duplex> {
      const socket = await openTcp(endpoint, signal);
      try {
        return await authenticate(socket, 'client', signal);
      } catch (err) {
        socket.destroy();
        throw err;
      }
    },
  };
}

export interface ImageStreamListener {
  port: number;
  host: string;
  close(): Promise<void>;
}

/**
 * Accepts image-stream connections on `host:port` (port 0: any free port), authenticates each, and hands the
 * authenticated connection to `onConnection` (which passes it to the engine's `receive`). Connections that fail
 * authentication are closed.
 */
export function listenForImageStreams(opts: {
  host?: string;
  port?: number;
  authenticate?: Authenticator;
  /** How long a connection may take to authenticate. */
  authTimeoutMs?: number;
  onConnection: (conn: Duplex, remote: string) => void;
  onError?: (err: Error, remote: string) => void;
}): Promise<ImageStreamListener> {
  const host = opts.host ?? '127.0.0.1';
  const authenticate = opts.authenticate ?? noAuthentication;
  const server: Server = createServer((socket) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    const signal = AbortSignal.timeout(opts.authTimeoutMs ?? 10_000);
    authenticate(socket, 'server', signal)
      .then(async (conn) => {
        const channel = await pageChannelId(conn, signal);
        if (channel === undefined) opts.onConnection(conn, remote);
        else if (isPlainSocket(conn)) offerPageChannel(channel, conn as Socket);
        else throw new Error('a page channel must be a plain TCP connection');
      })
      .catch((err: Error) => {
        socket.destroy();
        opts.onError?.(err, remote);
      });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      resolve({
        host,
        port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

/**
 * Looks at the first frame of an authenticated connection. A direct page channel (page-channel.ts) starts with
 * PAGES_CHANNEL: that frame is consumed and its id returned. Anything else is an image stream: every byte read is
 * pushed back and `undefined` returned. Reads no byte past the PAGES_CHANNEL frame (the source sends nothing more
 * until CRIU owns the socket).
 */
function pageChannelId(conn: Duplex, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const finish = (err: Error | undefined, id?: string): void => {
      conn.off('readable', onReadable);
      conn.off('end', onEnd);
      conn.off('error', onError);
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(id);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = conn.read() as Buffer | null) !== null) {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length < 5) continue;
        if (buffered.readUInt8(0) !== FRAME.PAGES_CHANNEL) {
          finish(undefined);
          conn.unshift(buffered);
          return;
        }
        const len = buffered.readUInt32BE(1);
        if (len > 1024) return finish(new Error('oversized PAGES_CHANNEL frame'));
        if (buffered.length < 5 + len) continue;
        if (buffered.length > 5 + len) return finish(new Error('data after PAGES_CHANNEL on a page channel'));
        let id: unknown;
        try {
          id = (JSON.parse(buffered.subarray(5).toString('utf8')) as { channel?: unknown }).channel;
        } catch {
          id = undefined;
        }
        if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) return finish(new Error('PAGES_CHANNEL without a valid channel id'));
        return finish(undefined, id);
      }
    };
    const onEnd = (): void => finish(new Error('connection closed before its first frame'));
    const onError = (err: Error): void => finish(err);
    const onAbort = (): void => finish(new Error('no first frame in time'));
    conn.on('readable', onReadable);
    conn.on('end', onEnd);
    conn.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
  });
}
