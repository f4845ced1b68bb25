/**
 * The CRIU engine's image stream: how a checkpoint flows from the source to the target while it is written.
 *
 * ## Why this shape
 *
 * CRIU can send memory pages — all but a few hundred KiB of an image — to a *page server* while it dumps
 * (`criu dump --page-server`), and the receiving `criu page-server` writes them as image files on the target.
 * Both ends accept an already connected socket (`--ps-socket FD`) instead of opening their own TCP connection.
 * We hand each `criu` one end of a unix socketpair (Node's `stdio: 'pipe'` is a socketpair) and the agents relay
 * the bytes over ONE connection between them, framed, together with the small non-page image files that the
 * dump leaves in a local directory:
 *
 * ```
 *  source                                                target
 *  criu dump --page-server --ps-socket 3                 criu page-server --ps-socket 3 -D dir
 *     ⇅ socketpair                                          ⇅ socketpair
 *  agent ⇄ [HELLO PAGES… PAGES_END FILE… DONE]  ⇄ connection ⇄ agent → dir/{pages,pagemap}-*.img
 *        ⇠ [PAGES (page-server replies) ACK]                  → dir/{core,mm,files,…}.img, dump.log
 *        ⇢ [COMMIT]  (only after the source stopped the task for good)
 * ```
 *
 * Relaying through the agents rather than letting the two `criu`s talk TCP directly costs a copy on each side
 * but buys what raw page-server TCP lacks: the connection is whatever the agents open — authenticated with the
 * cluster token, TLS when configured (a `tls.TLSSocket` is just another `Duplex` here) — CRIU never listens on
 * a port, the image files travel on the same connection, and either side learns of the other's failure at once.
 * No full copy of the image lands on the source's disk: only CRIU's small metadata images and its log do.
 *
 * ## Wire format
 *
 * Frames: 1 byte type, 4 bytes big-endian payload length, payload (≤ {@link MAX_FRAME_BYTES}). JSON payloads for
 * control frames; raw bytes for `PAGES` (the page-server protocol, in both directions) and `FILE_DATA`.
 *
 * The protocol is a two-phase hand-over: the target ACKs once the whole image is on its disk; the source then
 * stops the task for good (or keeps it, for a snapshot) and sends COMMIT. A target restores only after COMMIT,
 * so a task never runs in two places, and a source whose transfer failed before the ACK resumes its task.
 */
import { once } from 'node:events';
import { createReadStream, readFileSync, statSync, writeFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { EngineErrorCode, EngineFailure } from '../checkpoint-engine.js';

export const IMAGE_STREAM_PROTOCOL = 'spotwatch-criu-image/1';
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
const HEADER_BYTES = 5;
const FILE_CHUNK_BYTES = 256 * 1024;
/** Files up to this size are read whole and sent as one frame (see {@link ImageStreamSender.sendFiles}). */
const SMALL_FILE_BYTES = 1024 * 1024;
/**
 * How many bytes a relay lets queue in user space on its outgoing side before it stops reading its incoming side.
 * Node's default high-water mark (16 KiB) would pause the relay after nearly every 64 KiB read and wait for a
 * drain each time — a round trip through the event loop per chunk, with both ends idle meanwhile. A few MiB keep
 * the kernel buffers on both sides full; memory stays bounded per migration.
 */
export const RELAY_BUFFER_BYTES = 4 * 1024 * 1024;

export const FRAME = {
  HELLO: 1,
  PAGES: 2,
  PAGES_END: 3,
  FILE_BEGIN: 4,
  FILE_DATA: 5,
  FILE_END: 6,
  DONE: 7,
  ACK: 8,
  COMMIT: 9,
  ERROR: 10,
  /** First and only frame on a direct page channel (page-channel.ts): `{ channel }`. */
  PAGES_CHANNEL: 11,
  /** Target → source, in answer to a HELLO that offered a page channel: `{ direct }` (false: relay the pages). */
  PAGES_MODE: 12,
  /**
   * Target → source after a post-copy COMMIT: `{}` once every page of the task is in place on the target. Only then
   * may the source drop its frozen copy (CRIU's lazy page server takes a plain close for "done").
   */
  FILLED: 13,
} as const;

const FRAME_NAMES = Object.fromEntries(Object.entries(FRAME).map(([k, v]) => [v, k])) as Record<number, string>;

export interface Frame {
  type: number;
  payload: Buffer;
}

export interface StreamHello {
  protocol: string;
  migrationId: string;
  engine: 'criu';
  criuVersion?: string;
  estimatedBytes?: number;
  /** Id of a direct page channel the source opened (page-channel.ts); the target answers with PAGES_MODE. */
  pageChannel?: string;
  /**
   * The source offers post-copy: the task's memory stays on the source and the target's restore pulls it over the
   * page channel after the task runs there. `pids` are the tree's pids (its restore needs them free on the target,
   * unless the tree is a pid namespace of its own: `pidNamespace`).
   */
  postCopy?: { pids: number[]; pidNamespace: boolean };
}

export interface StreamPagesMode {
  /** The target's page server owns the page channel: the source's `criu dump` may use it. */
  direct: boolean;
  /** The target takes the offered post-copy: it keeps the channel for its restore (no page server). */
  postCopy?: boolean;
}

export interface StreamFile {
  name: string;
  size: number;
}

export interface StreamDone {
  files: StreamFile[];
  pageBytes: number;
}

export interface StreamAck {
  files: number;
  bytes: number;
}

export interface StreamCommit {
  /** The task is stopped on the source for good: the image is now the task. False for a snapshot. */
  sourceStopped: boolean;
}

export interface StreamErrorPayload {
  code: EngineErrorCode;
  status: EngineFailure['status'];
  message: string;
}

/** A failure of the stream: broken connection, protocol violation, or an error the peer reported. */
export class ImageStreamError extends Error {
  readonly code: EngineErrorCode;
  readonly status: EngineFailure['status'];
  /** The peer sent this error (its own failure), rather than the stream breaking. */
  readonly fromPeer: boolean;

  constructor(p: StreamErrorPayload, fromPeer: boolean, options?: { cause?: unknown }) {
    super(p.message, options);
    this.name = 'ImageStreamError';
    this.code = p.code;
    this.status = p.status;
    this.fromPeer = fromPeer;
  }
}

export function transportError(message: string, cause?: unknown): ImageStreamError {
  return new ImageStreamError({ code: 'TRANSPORT_FAILED', status: 'retryable', message }, false, { cause });
}

function protocolError(message: string): ImageStreamError {
  return new ImageStreamError({ code: 'TRANSPORT_FAILED', status: 'retryable', message: `image stream protocol error: ${message}` }, false);
}

/** Image file names the receiver accepts: plain names, no paths. */
export function isSafeImageFileName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/.test(name) && name !== '.' && name !== '..';
}

export function encodeFrameHeader(type: number, length: number): Buffer {
  if (length > MAX_FRAME_BYTES) throw new RangeError(`frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(length, 1);
  return h;
}

/**
 * Splits a byte stream into frames; keeps at most one partial frame buffered. The partial frame is kept as a
 * list of chunks and joined once, when complete (one copy per frame at most, none when a frame lies within one
 * chunk), so large frames cost no repeated re-concatenation.
 */
export class FrameDecoder {
  private parts: Buffer[] = [];
  private length = 0;

  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.parts.push(chunk);
      this.length += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.length < HEADER_BYTES) break;
      const head = this.peek(HEADER_BYTES);
      const type = head.readUInt8(0);
      const len = head.readUInt32BE(1);
      if (len > MAX_FRAME_BYTES) throw protocolError(`frame of ${len} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (!(type in FRAME_NAMES)) throw protocolError(`unknown frame type ${type}`);
      if (this.length < HEADER_BYTES + len) break;
      this.take(HEADER_BYTES);
      frames.push({ type, payload: this.take(len) });
    }
    return frames;
  }

  /** The first `n` buffered bytes (n ≤ length), without consuming them. */
  private peek(n: number): Buffer {
    const first = this.parts[0] as Buffer;
    if (first.length >= n) return first;
    const joined = Buffer.concat(this.parts);
    this.parts = [joined];
    return joined;
  }

  /** Consumes the first `n` buffered bytes (n ≤ length). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.length -= n;
    const first = this.parts[0] as Buffer;
    if (first.length > n) {
      this.parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.parts.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const p = this.parts[0] as Buffer;
      const k = Math.min(p.length, n - filled);
      p.copy(out, filled, 0, k);
      filled += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = p.subarray(k);
    }
    return out;
  }

  /** Bytes of an incomplete frame still buffered. */
  get pending(): number {
    return this.length;
  }
}

/** Frames of a readable stream, in order; throws on a truncated frame or a broken stream. */
export async function* readFrames(input: Readable): AsyncGenerator<Frame, void, void> {
  const decoder = new FrameDecoder();
  try {
    for await (const chunk of input) {
      for (const f of decoder.push(chunk as Buffer)) yield f;
    }
  } catch (err) {
    if (err instanceof ImageStreamError) throw err;
    throw transportError(`image stream broke: ${(err as Error).message}`, err);
  }
  if (decoder.pending > 0) throw transportError('image stream ended inside a frame');
}

/** Resolves when `w` may take more data; rejects if it closes or errors first. */
export function waitDrain(w: Writable): Promise<void> {
  if (!w.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      w.off('drain', onDrain);
      w.off('close', onClose);
      w.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(transportError('connection closed while writing'));
    const onError = (e: Error): void => done(transportError(`connection failed while writing: ${e.message}`, e));
    w.on('drain', onDrain);
    w.on('close', onClose);
    w.on('error', onError);
  });
}

/** Writes frames; header and payload go out in one writev. */
export class FrameWriter {
  private held = false;

  constructor(private readonly out: Writable) {}

  /** Returns false when the caller should wait for {@link drain} before writing more. */
  send(type: number, payload?: Buffer): boolean {
    if (this.out.destroyed || this.out.writableEnded) throw transportError('connection already closed');
    const len = payload?.length ?? 0;
    this.out.cork();
    let ok = this.out.write(encodeFrameHeader(type, len));
    if (payload && len > 0) ok = this.out.write(payload);
    this.out.uncork();
    return ok;
  }

  /**
   * Holds frames in user space until {@link flush}: a batch of small frames then leaves in one write (one wake-up of
   * the receiver) instead of one per frame.
   */
  hold(): void {
    if (this.held) return;
    this.held = true;
    this.out.cork();
  }

  flush(): void {
    if (!this.held) return;
    this.held = false;
    this.out.uncork();
  }

  /** Bytes queued in user space, not yet handed to the kernel. */
  get buffered(): number {
    return this.out.writableLength;
  }

  json(type: number, value: unknown): boolean {
    return this.send(type, Buffer.from(JSON.stringify(value)));
  }

  drain(): Promise<void> {
    return waitDrain(this.out);
  }
}

function parseJson<T>(f: Frame): T {
  try {
    return JSON.parse(f.payload.toString('utf8')) as T;
  } catch {
    throw protocolError(`${FRAME_NAMES[f.type]} payload is not JSON`);
  }
}

function peerError(f: Frame): ImageStreamError {
  const p = parseJson<Partial<StreamErrorPayload>>(f);
  return new ImageStreamError(
    {
      code: typeof p.code === 'string' ? p.code : 'TRANSPORT_FAILED',
      status: p.status === 'fatal' ? 'fatal' : 'retryable',
      message: `peer reported: ${typeof p.message === 'string' ? p.message : 'an unspecified error'}`,
    },
    true,
  );
}

/** Relays `from` into PAGES frames on `w`, with backpressure both ways; resolves with the bytes relayed at EOF. */
function relayIntoFrames(from: Readable, w: FrameWriter, onBytes: (n: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length;
      onBytes(chunk.length);
      try {
        w.send(FRAME.PAGES, chunk);
      } catch (err) {
        cleanup();
        reject(err);
        return;
      }
      if (w.buffered > RELAY_BUFFER_BYTES) {
        from.pause();
        w.drain().then(
          () => from.resume(),
          (err: unknown) => {
            cleanup();
            reject(err);
          },
        );
      }
    };
    const onEnd = (): void => {
      cleanup();
      resolve(bytes);
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(transportError(`page socket failed: ${err.message}`, err));
    };
    const onClose = (): void => {
      cleanup();
      reject(transportError('page socket closed before its end'));
    };
    const cleanup = (): void => {
      from.off('data', onData);
      from.off('end', onEnd);
      from.off('error', onError);
      from.off('close', onClose);
    };
    from.on('data', onData);
    from.on('end', onEnd);
    from.on('error', onError);
    from.on('close', onClose);
  });
}

/**
 * Pumps CRIU's page-server conversation between `pageSocket` (criu dump's end of its socketpair) and a direct page
 * channel whose far end is the target's `criu page-server` (page-channel.ts): raw bytes, no frames, replies
 * back. Resolves with the bytes sent once the dump closed its end (the channel is then ended too); rejects when
 * either side fails first.
 *
 * Why the source still pumps rather than handing the channel to `criu dump` as well: `criu dump` splices pages
 * into its socket, and spliced pages on TCP loopback showed a lost segment at the tail of nearly every dump, which
 * then waits out a ~200 ms retransmission timeout while the task is frozen (docs/migration-performance.md). Plain
 * writes from the agent do not, and one copy on the source is cheap next to that.
 */
export function pumpPages(pageSocket: Duplex, channel: Duplex, onBytes: (total: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      pageSocket.off('data', onData);
      channel.off('data', onReply);
      if (err) {
        channel.destroy();
        reject(err);
      } else resolve(bytes);
    };
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length;
      onBytes(bytes);
      channel.write(chunk);
      if (channel.writableLength > RELAY_BUFFER_BYTES) {
        pageSocket.pause();
        waitDrain(channel).then(
          () => pageSocket.resume(),
          (err: unknown) => settle(err instanceof Error ? err : transportError(String(err))),
        );
      }
    };
    const onReply = (chunk: Buffer): void => {
      if (!pageSocket.destroyed) pageSocket.write(chunk);
    };
    pageSocket.on('error', (err: Error) => settle(transportError(`page socket failed: ${err.message}`, err)));
    pageSocket.on('data', onData);
    pageSocket.once('end', () => {
      channel.end();
      settle();
    });
    pageSocket.once('close', () => settle(transportError('page socket closed before its end')));
    channel.on('error', (err: Error) => settle(transportError(`page channel failed: ${err.message}`, err)));
    channel.on('data', onReply);
    // The page server closes the channel when its session is over, possibly just before the dump closes its end:
    // a clean end is no failure here (had the page server quit early, the dump fails and says so).
    let channelEnded = false;
    channel.once('end', () => {
      channelEnded = true;
      if (!pageSocket.destroyed) pageSocket.end();
    });
    channel.once('close', () => {
      if (!channelEnded) settle(transportError('page channel closed while the dump was sending pages'));
    });
  });
}

/** Starts a direct page channel (page-channel.ts): its one and only frame. */
export function sendPageChannelFrame(conn: Duplex, channel: string): void {
  new FrameWriter(conn).json(FRAME.PAGES_CHANNEL, { channel });
}

/**
 * Source side of one image stream. Construct it on a freshly opened connection; it reads the peer's frames in
 * the background (page-server replies, ACK, errors) and exposes the send steps in protocol order.
 */
export class ImageStreamSender {
  private readonly w: FrameWriter;
  private pagesOut: Writable | undefined;
  private ack: { resolve: (a: StreamAck) => void; reject: (e: Error) => void } | undefined;
  private mode: { resolve: (m: StreamPagesMode) => void; reject: (e: Error) => void } | undefined;
  private modeValue: StreamPagesMode | undefined;
  private readonly failureListeners: ((err: ImageStreamError) => void)[] = [];
  private ackValue: StreamAck | undefined;
  private filledValue = false;
  private filledWaiter: Deferred<void> | undefined;
  private failure: ImageStreamError | undefined;
  private committed = false;
  /** Bytes sent so far (pages and files). */
  bytesSent = 0;

  constructor(
    private readonly conn: Duplex,
    private readonly onBytes: (total: number) => void = () => undefined,
  ) {
    this.w = new FrameWriter(conn);
    conn.on('error', () => undefined); // surfaced through the reader below
    this.reading = this.readLoop();
  }

  private readonly reading: Promise<void>;

  /**
   * A local write failed (typically: the connection is closed). If the receiver said why — an ERROR frame still
   * being read — that is the better explanation; give the reader a moment to get to it.
   */
  private async explain(err: unknown): Promise<unknown> {
    if (!this.failure) await Promise.race([this.reading, new Promise((r) => setTimeout(r, 1000).unref())]);
    return this.failure ?? err;
  }

  private count(n: number): void {
    this.bytesSent += n;
    this.onBytes(this.bytesSent);
  }

  private fail(err: ImageStreamError): void {
    if (this.failure) return;
    this.failure = err;
    this.ack?.reject(err);
    this.mode?.reject(err);
    this.pagesOut?.destroy();
    for (const l of this.failureListeners) l(err);
  }

  private async readLoop(): Promise<void> {
    try {
      for await (const f of readFrames(this.conn)) {
        if (f.type === FRAME.PAGES) {
          const out = this.pagesOut;
          if (!out || out.destroyed) continue; // replies after the dump closed its side are of no use
          if (!out.write(f.payload)) await waitDrain(out).catch(() => undefined);
        } else if (f.type === FRAME.PAGES_MODE) {
          const m = parseJson<Partial<StreamPagesMode>>(f);
          this.modeValue = { direct: m.direct === true, postCopy: m.postCopy === true };
          this.mode?.resolve(this.modeValue);
        } else if (f.type === FRAME.ACK) {
          this.ackValue = parseJson<StreamAck>(f);
          this.ack?.resolve(this.ackValue);
        } else if (f.type === FRAME.FILLED) {
          this.filledValue = true;
          this.filledWaiter?.resolve();
        } else if (f.type === FRAME.ERROR) {
          throw peerError(f);
        } else {
          throw protocolError(`unexpected ${FRAME_NAMES[f.type]} from the receiver`);
        }
      }
      if (!this.committed) this.fail(transportError('the receiver closed the connection'));
      this.filledWaiter?.reject(transportError('the receiver closed the connection before every page was in place'));
    } catch (err) {
      const e = err instanceof ImageStreamError ? err : transportError((err as Error).message, err);
      this.fail(e);
      this.filledWaiter?.reject(e);
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  hello(h: Omit<StreamHello, 'protocol'>): void {
    this.check();
    this.w.json(FRAME.HELLO, { protocol: IMAGE_STREAM_PROTOCOL, ...h });
  }

  /** The stream's failure, if it failed. */
  get error(): ImageStreamError | undefined {
    return this.failure;
  }

  /** Calls `listener` once, when the stream fails (at once if it already has). */
  onFailure(listener: (err: ImageStreamError) => void): void {
    if (this.failure) listener(this.failure);
    else this.failureListeners.push(listener);
  }

  /** After a HELLO that offered a page channel: the target's answer (PAGES_MODE). */
  pagesMode(): Promise<StreamPagesMode> {
    this.check();
    if (this.modeValue) return Promise.resolve(this.modeValue);
    return new Promise((resolve, reject) => {
      this.mode = { resolve, reject };
    });
  }

  /** Counts page bytes that went over a direct page channel (they are part of the image sent). */
  countDirectPages(bytes: number): void {
    this.count(bytes);
  }

  /**
   * Relays the page-server conversation between `pageSocket` (CRIU's end of the socketpair) and the peer until
   * CRIU closes it, then sends PAGES_END. Resolves with the page bytes sent.
   */
  async relayPages(pageSocket: Duplex): Promise<number> {
    this.check();
    this.pagesOut = pageSocket;
    pageSocket.on('error', () => undefined);
    let bytes: number;
    try {
      bytes = await relayIntoFrames(pageSocket, this.w, (n) => this.count(n));
    } catch (err) {
      throw await this.explain(err);
    }
    this.check();
    this.w.json(FRAME.PAGES_END, { bytes });
    return bytes;
  }

  /** Sends one file of the local image directory. */
  async sendFile(dir: string, name: string): Promise<StreamFile> {
    try {
      return await this.sendFileUnchecked(dir, name);
    } catch (err) {
      throw await this.explain(err);
    }
  }

  /**
   * Sends several files of the local image directory, in order. Small files (CRIU's metadata images, the log) are
   * read concurrently up front and each goes out as one frame: after a dump the task is frozen while these
   * few dozen files cross, and reading them one by one through streams cost ~20 ms.
   */
  async sendFiles(dir: string, names: readonly string[]): Promise<StreamFile[]> {
    try {
      this.check();
      for (const name of names) if (!isSafeImageFileName(name)) throw new RangeError(`not a plain image file name: ${name}`);
      // Small files are read synchronously (tmpfs, a few KiB each): thread-pool round trips would cost more.
      const sizes = names.map((name) => statSync(join(dir, name)).size);
      const small = names.map((name, i) => ((sizes[i] as number) <= SMALL_FILE_BYTES ? readFileSync(join(dir, name)) : undefined));
      const sent: StreamFile[] = [];
      // Consecutive small files leave as one write; held frames are flushed before anything waits.
      this.w.hold();
      try {
        for (const [i, name] of names.entries()) {
          const data = small[i];
          if (!data) {
            this.w.flush();
            sent.push(await this.sendFileUnchecked(dir, name));
            this.w.hold();
            continue;
          }
          this.check();
          // (A small file goes as read, whole: a log CRIU still appends to — a post-copy dump serves on — is sent as
          // far as it was written.)
          this.w.json(FRAME.FILE_BEGIN, { name, size: data.length });
          if (data.length > 0) this.w.send(FRAME.FILE_DATA, data);
          this.count(data.length);
          this.w.json(FRAME.FILE_END, { name, size: data.length });
          if (this.w.buffered > RELAY_BUFFER_BYTES) {
            this.w.flush();
            await this.w.drain();
            this.w.hold();
          }
          sent.push({ name, size: data.length });
        }
      } finally {
        this.w.flush();
      }
      return sent;
    } catch (err) {
      throw await this.explain(err);
    }
  }

  private async sendFileUnchecked(dir: string, name: string): Promise<StreamFile> {
    this.check();
    if (!isSafeImageFileName(name)) throw new RangeError(`not a plain image file name: ${name}`);
    const path = join(dir, name);
    const size = (await stat(path)).size;
    this.w.json(FRAME.FILE_BEGIN, { name, size });
    let sent = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: FILE_CHUNK_BYTES })) {
      this.check();
      const b = chunk as Buffer;
      sent += b.length;
      this.count(b.length);
      if (!this.w.send(FRAME.FILE_DATA, b)) await this.w.drain();
    }
    if (sent !== size) throw new Error(`${name} changed size while being sent (${size} → ${sent} bytes)`);
    this.w.json(FRAME.FILE_END, { name, size });
    return { name, size };
  }

  /** Sends DONE and waits for the receiver's ACK: the whole image is on the target's disk. */
  async finish(done: StreamDone): Promise<StreamAck> {
    this.check();
    const acked = new Promise<StreamAck>((resolve, reject) => {
      if (this.ackValue) resolve(this.ackValue);
      else this.ack = { resolve, reject };
    });
    try {
      this.w.json(FRAME.DONE, done);
      await this.w.drain();
    } catch (err) {
      acked.catch(() => undefined);
      throw await this.explain(err);
    }
    return acked;
  }

  /** Sends COMMIT and closes the connection once it is flushed (post-copy: keeps it open for FILLED). */
  async commit(c: StreamCommit, opts: { awaitFilled?: boolean } = {}): Promise<void> {
    this.check();
    this.committed = true;
    if (opts.awaitFilled) {
      this.filledWaiter ??= deferred<void>();
      this.filledWaiter.promise.catch(() => undefined);
      if (this.filledValue) this.filledWaiter.resolve();
    }
    this.w.json(FRAME.COMMIT, c);
    if (opts.awaitFilled) return;
    this.conn.end();
    await Promise.race([once(this.conn, 'finish'), once(this.conn, 'close')]).catch(() => undefined);
  }

  /**
   * After `commit(…, { awaitFilled: true })`: resolves when the target reports every page in place (FILLED), rejects
   * when it reports a failure or the connection ends first. Closes the connection either way.
   */
  async filled(): Promise<void> {
    const w = this.filledWaiter;
    if (!w) throw new Error('filled() needs commit(…, { awaitFilled: true })');
    try {
      await w.promise;
    } finally {
      this.conn.end();
      setTimeout(() => this.conn.destroy(), 1000).unref();
    }
  }

  /** Tells the receiver why the stream stops, then closes. Never throws. */
  abort(p: StreamErrorPayload): void {
    this.committed = true;
    try {
      if (!this.conn.destroyed && !this.conn.writableEnded) {
        this.w.json(FRAME.ERROR, p);
        this.conn.end();
      }
    } catch {
      // the connection is already gone
    }
    setTimeout(() => this.conn.destroy(), 1000).unref();
  }

  /** Closes the connection at once (deadline, abort). */
  destroy(): void {
    this.committed = true;
    this.conn.destroy();
  }
}

/** Target side of one image stream: reads frames in order and writes the image into a directory. */
export class ImageStreamReceiver {
  private readonly w: FrameWriter;
  private readonly frames: AsyncGenerator<Frame, void, void>;
  /** Image bytes received so far (pages and files). */
  bytesReceived = 0;

  constructor(
    private readonly conn: Duplex,
    private readonly onBytes: (total: number) => void = () => undefined,
  ) {
    this.w = new FrameWriter(conn);
    conn.on('error', () => undefined); // surfaced through readFrames
    this.frames = readFrames(conn);
  }

  private async next(what: string): Promise<Frame> {
    const r = await this.frames.next();
    if (r.done) throw transportError(`the source closed the connection while the target waited for ${what}`);
    if (r.value.type === FRAME.ERROR) throw peerError(r.value);
    return r.value;
  }

  private count(n: number): void {
    this.bytesReceived += n;
    this.onBytes(this.bytesReceived);
  }

  async readHello(expectedMigrationId?: string): Promise<StreamHello> {
    const f = await this.next('HELLO');
    if (f.type !== FRAME.HELLO) throw protocolError(`expected HELLO, got ${FRAME_NAMES[f.type]}`);
    const h = parseJson<StreamHello>(f);
    if (h.protocol !== IMAGE_STREAM_PROTOCOL) {
      throw new ImageStreamError({ code: 'IMAGE_INVALID', status: 'fatal', message: `unsupported image stream protocol ${String(h.protocol)} (want ${IMAGE_STREAM_PROTOCOL})` }, false);
    }
    if (typeof h.migrationId !== 'string' || (expectedMigrationId !== undefined && h.migrationId !== expectedMigrationId)) {
      throw new ImageStreamError({ code: 'INVALID_REQUEST', status: 'fatal', message: `image stream is for migration ${String(h.migrationId)}, expected ${expectedMigrationId}` }, false);
    }
    return h;
  }

  /**
   * Receives everything up to DONE: page-server bytes go to `pageSocket` (the local page server's end of a
   * socketpair, whose replies go back to the source), files go into `dir`. Resolves with DONE's content once
   * every announced file is complete.
   */
  async receive(dir: string, pageSocket: Duplex | undefined): Promise<StreamDone & { pageBytesReceived: number }> {
    let pageBytes = 0;
    let pagesEnded = false;
    let relayFailure: Error | undefined;
    let relay: Promise<number> | undefined;
    if (pageSocket) {
      pageSocket.on('error', () => undefined);
      relay = relayIntoFrames(pageSocket, this.w, () => undefined).catch((err: Error) => {
        relayFailure = err;
        return 0;
      });
    }
    const written = new Map<string, number>();
    let current: { name: string; size: number; fh?: FileHandle; chunks?: Buffer[]; bytes: number } | undefined;
    try {
      for (;;) {
        if (relayFailure) throw relayFailure;
        const f = await this.next('the image');
        switch (f.type) {
          case FRAME.PAGES:
            if (!pageSocket || pagesEnded) throw protocolError('PAGES without a page server');
            pageBytes += f.payload.length;
            this.count(f.payload.length);
            if (!pageSocket.destroyed) {
              pageSocket.write(f.payload);
              if (pageSocket.writableLength > RELAY_BUFFER_BYTES) await waitDrain(pageSocket);
            }
            break;
          case FRAME.PAGES_END: {
            pagesEnded = true;
            const { bytes } = parseJson<{ bytes: number }>(f);
            if (bytes !== pageBytes) throw protocolError(`source sent ${bytes} page bytes, ${pageBytes} arrived`);
            break;
          }
          case FRAME.FILE_BEGIN: {
            if (current) throw protocolError('FILE_BEGIN inside a file');
            const { name, size } = parseJson<StreamFile>(f);
            if (!isSafeImageFileName(name)) throw protocolError(`unsafe image file name ${JSON.stringify(name)}`);
            if (written.has(name)) throw protocolError(`${name} sent twice`);
            // Small files (most of an image's, and all of them with post-copy) are kept whole and written at once,
            // synchronously: three thread-pool round trips for each of ~30 files cost ~10 ms in the task's downtime.
            current = { name, size, ...(size <= SMALL_FILE_BYTES ? { chunks: [] } : { fh: await open(join(dir, name), 'wx', 0o600) }), bytes: 0 };
            break;
          }
          case FRAME.FILE_DATA:
            if (!current) throw protocolError('FILE_DATA outside a file');
            if (current.chunks) {
              if (current.bytes + f.payload.length > current.size) throw protocolError(`${current.name}: more than the ${current.size} bytes announced`);
              current.chunks.push(f.payload);
            } else await current.fh!.write(f.payload);
            current.bytes += f.payload.length;
            this.count(f.payload.length);
            break;
          case FRAME.FILE_END: {
            if (!current) throw protocolError('FILE_END outside a file');
            const c = current;
            current = undefined;
            if (c.chunks) writeFileSync(join(dir, c.name), Buffer.concat(c.chunks), { flag: 'wx', mode: 0o600 });
            else await c.fh!.close();
            if (c.bytes !== c.size) throw protocolError(`${c.name}: ${c.bytes} bytes arrived, ${c.size} announced`);
            written.set(c.name, c.size);
            break;
          }
          case FRAME.DONE: {
            if (current) throw protocolError('DONE inside a file');
            const done = parseJson<StreamDone>(f);
            for (const file of done.files) {
              if (written.get(file.name) !== file.size) throw protocolError(`${file.name} announced in DONE was not received whole`);
            }
            if (pageSocket && !pagesEnded) throw protocolError('DONE before PAGES_END');
            if (relay) await relay; // the page server has said its last word
            if (relayFailure) throw relayFailure;
            return { ...done, pageBytesReceived: pageBytes };
          }
          default:
            throw protocolError(`unexpected ${FRAME_NAMES[f.type]} from the source`);
        }
      }
    } finally {
      if (current?.fh) await current.fh.close().catch(() => undefined);
    }
  }

  /** Answers a HELLO that offered a page channel. */
  pagesMode(m: StreamPagesMode): void {
    this.w.json(FRAME.PAGES_MODE, m);
  }

  /** Post-copy: every page of the task is in place here; the source may drop its copy. Closes the stream; never throws. */
  filled(): void {
    this.finalWord(FRAME.FILLED, {});
  }

  /**
   * Post-copy: the memory did not all arrive; the source keeps (and resumes) its copy. Closes the stream; never
   * throws (a source that is gone already knows).
   */
  notFilled(message: string): void {
    this.finalWord(FRAME.ERROR, { code: 'RESTORE_FAILED', status: 'retryable', message } satisfies StreamErrorPayload);
  }

  private finalWord(type: number, body: object): void {
    try {
      if (!this.conn.destroyed && !this.conn.writableEnded) this.w.json(type, body);
      this.conn.end();
    } catch {
      // the source closed the stream first
    }
    setTimeout(() => this.conn.destroy(), 1000).unref();
  }

  /** Counts page bytes that arrived over a direct page channel. */
  countDirectPages(bytes: number): void {
    this.count(bytes);
  }

  /** Confirms the whole image is on disk. */
  async ack(a: StreamAck): Promise<void> {
    this.w.json(FRAME.ACK, a);
    await this.w.drain();
  }

  /** Waits for the source's COMMIT. */
  async awaitCommit(): Promise<StreamCommit> {
    const f = await this.next('COMMIT');
    if (f.type !== FRAME.COMMIT) throw protocolError(`expected COMMIT, got ${FRAME_NAMES[f.type]}`);
    const c = parseJson<StreamCommit>(f);
    return { sourceStopped: c.sourceStopped === true };
  }

  /** Tells the source why the target gives up, then closes. Never throws. */
  abort(p: StreamErrorPayload): void {
    try {
      if (!this.conn.destroyed && !this.conn.writableEnded) {
        this.w.json(FRAME.ERROR, p);
        this.conn.end();
      }
    } catch {
      // already gone
    }
    setTimeout(() => this.conn.destroy(), 1000).unref();
  }

  close(): void {
    if (!this.conn.writableEnded) this.conn.end();
    setTimeout(() => this.conn.destroy(), 1000).unref();
  }

  destroy(): void {
    this.conn.destroy();
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
