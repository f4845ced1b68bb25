/**
 * Direct page channels: a second authenticated connection between two agents that carries CRIU's page-server
 * protocol with no agent in the middle.
 *
 * The relay (image-stream.ts) moves every page through both agents: criu dump → socketpair → agent → TCP → agent
 * → socketpair → criu page-server, four extra copies and two event loops per 64 KiB. When the connection between
 * the agents is a plain authenticated TCP socket (no TLS: CRIU cannot speak our TLS), the agents can instead open
 * a second connection, authenticate it exactly like the first (the {@link Authenticator} seam), and hand its file
 * descriptor to the two `criu`s as `--ps-socket`: pages then go from `criu dump` into TCP and from TCP into
 * `criu page-server`, spliced by the kernel. Everything else — HELLO, the small image files, ACK, COMMIT, errors —
 * stays on the framed connection, so the two-phase hand-over is unchanged.
 *
 * Handing over a socket safely: an agent must not read a byte of the page-server conversation. Both sides send
 * and read exactly one framed message on the channel (PAGES_CHANNEL, source → target) before CRIU owns it; the
 * source starts `criu dump` only after the target said (on the framed connection) that its page server owns the
 * channel, and each agent closes its own descriptor in the same tick as it spawns its `criu`. The socket goes to
 * CRIU as its stdin: libuv makes fds 0–2 of a child blocking (CRIU's page-server code needs a blocking socket),
 * whereas a socket passed at fd 3 would stay non-blocking and CRIU fails with EAGAIN.
 *
 * On the target, the listener routes a connection whose first frame is PAGES_CHANNEL here (transport.ts), keyed
 * by a random id the source announced in HELLO; the engine's `receive` for that migration takes it.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** How long an offered channel waits to be taken (and a receive waits for its channel). */
export const PAGE_CHANNEL_WAIT_MS = 10_000;

interface Offered {
  socket: Socket;
  timer: NodeJS.Timeout;
}

const offered = new Map<string, Offered>();
const waiting = new Map<string, (socket: Socket | undefined) => void>();

/**
 * Whether `conn` is a plain TCP socket whose descriptor CRIU can use directly: a `net.Socket` with a handle, not
 * a TLS socket (CRIU would see ciphertext).
 */
export function isPlainSocket(conn: Duplex): boolean {
  if (!(conn instanceof Socket)) return false;
  if ((conn as Socket & { encrypted?: boolean }).encrypted) return false;
  const handle = (conn as Socket & { _handle?: { fd?: number } | null })._handle;
  return !conn.destroyed && typeof handle?.fd === 'number' && handle.fd >= 0;
}

/** A listener received the channel `id`: give it to the receive waiting for it, or keep it a while. */
export function offerPageChannel(id: string, socket: Socket): void {
  const take = waiting.get(id);
  if (take) {
    waiting.delete(id);
    take(socket);
    return;
  }
  offered.get(id)?.socket.destroy();
  const timer = setTimeout(() => {
    offered.delete(id);
    socket.destroy();
  }, PAGE_CHANNEL_WAIT_MS);
  timer.unref();
  offered.set(id, { socket, timer });
}

/** Takes the channel `id` once it arrives; `undefined` after `timeoutMs` or when `signal` fires. */
export function takePageChannel(id: string, timeoutMs: number, signal?: AbortSignal): Promise<Socket | undefined> {
  const ready = offered.get(id);
  if (ready) {
    offered.delete(id);
    clearTimeout(ready.timer);
    return Promise.resolve(ready.socket);
  }
  return new Promise((resolve) => {
    const done = (socket: Socket | undefined): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (waiting.get(id) === done) waiting.delete(id);
      resolve(socket);
    };
    const onAbort = (): void => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    waiting.set(id, done);
  });
}
