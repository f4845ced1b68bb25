import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FRAME, FrameDecoder, FrameWriter, ImageStreamError, ImageStreamReceiver, ImageStreamSender, encodeFrameHeader, isSafeImageFileName } from '../../src/engines/criu/image-stream.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'spotwatch-stream-'));
  dirs.push(d);
  return d;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Two connected TCP sockets on loopback. */
async function socketPair(): Promise<[Socket, Socket]> {
  return new Promise((resolve) => {
    const server = createServer((a) => {
      server.close();
      resolve([a, b]);
    });
    let b: Socket;
    server.listen(0, '127.0.0.1', () => {
      b = connect((server.address() as { port: number }).port, '127.0.0.1');
    });
  });
}

describe('frames', () => {
  it('decode across any chunk boundary', () => {
    const payloads = [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(70_000, 7)];
    const wire = Buffer.concat(payloads.flatMap((p, i) => [encodeFrameHeader(i === 1 ? FRAME.PAGES_END : FRAME.PAGES, p.length), p]));
    for (const step of [1, 3, 4096, wire.length]) {
      const d = new FrameDecoder();
      const got = [];
      for (let i = 0; i < wire.length; i += step) got.push(...d.push(wire.subarray(i, i + step)));
      expect(got.map((f) => [f.type, f.payload.length])).toEqual([[FRAME.PAGES, 5], [FRAME.PAGES_END, 0], [FRAME.PAGES, 70_000]]);
      expect(d.pending).toBe(0);
    }
  });

  it('refuse unknown types and oversized frames', () => {
    expect(() => new FrameDecoder().push(Buffer.from([99, 0, 0, 0, 0]))).toThrow(/unknown frame type/);
    expect(() => new FrameDecoder().push(Buffer.from([2, 0x7f, 0, 0, 0]))).toThrow(/exceeds/);
    expect(() => encodeFrameHeader(2, 64 * 1024 * 1024)).toThrow(RangeError);
  });

  it('accept only plain image file names', () => {
    expect(isSafeImageFileName('pages-1.img')).toBe(true);
    expect(isSafeImageFileName('dump.log')).toBe(true);
    for (const bad of ['../x', 'a/b', '.hidden', '', '..']) expect(isSafeImageFileName(bad)).toBe(false);
  });
});

describe('image stream sender → receiver', () => {
  it('relays the page-server conversation both ways, moves the files, then ACK and COMMIT', async () => {
    const [src, dst] = await socketPair();
    const [dumpSide, dumpCriu] = await socketPair(); // stands in for criu dump's socketpair
    const [psSide, psCriu] = await socketPair(); // stands in for criu page-server's socketpair
    const local = tmp();
    writeFileSync(join(local, 'core-1.img'), Buffer.alloc(300_000, 1));
    writeFileSync(join(local, 'dump.log'), 'log\n');
    const target = tmp();

    // the "page server": reads everything, answers "ok" to each "?", closes on "bye"
    let psGot = '';
    psCriu.on('data', (d: Buffer) => {
      psGot += d.toString();
      for (const _ of d.toString().match(/\?/g) ?? []) psCriu.write('ok');
      if (psGot.endsWith('bye')) psCriu.end();
    });
    // the "dump": sends pages and questions, waits for answers, then closes
    let dumpGot = '';
    dumpCriu.on('data', (d: Buffer) => {
      dumpGot += d.toString();
      if (dumpGot === 'okok') dumpCriu.end('bye');
    });

    const receiver = new ImageStreamReceiver(dst);
    const sender = new ImageStreamSender(src);
    sender.hello({ migrationId: 'm1', engine: 'criu' });
    const hello = await receiver.readHello('m1');
    expect(hello.migrationId).toBe('m1');
    const receiving = receiver.receive(target, psSide);
    dumpCriu.write('x'.repeat(200_000) + '?');
    dumpCriu.write('?');
    const pageBytes = await sender.relayPages(dumpSide);
    expect(pageBytes).toBe(200_000 + 2 + 3);
    const files = [await sender.sendFile(local, 'core-1.img'), await sender.sendFile(local, 'dump.log')];
    const acked = sender.finish({ files, pageBytes });
    const done = await receiving;
    expect(done.pageBytesReceived).toBe(pageBytes);
    await receiver.ack({ files: done.files.length, bytes: receiver.bytesReceived });
    expect(await acked).toEqual({ files: 2, bytes: pageBytes + 300_004 });
    const committing = receiver.awaitCommit();
    await sender.commit({ sourceStopped: true });
    expect(await committing).toEqual({ sourceStopped: true });
    expect(psGot).toBe('x'.repeat(200_000) + '??bye');
    expect(readdirSync(target).sort()).toEqual(['core-1.img', 'dump.log']);
    expect(readFileSync(join(target, 'core-1.img')).equals(Buffer.alloc(300_000, 1))).toBe(true);
    expect(sender.bytesSent).toBe(receiver.bytesReceived);
    receiver.close();
  });

  it('post-copy: the stream stays open after COMMIT until the target says every page is in place (FILLED), or why not', async () => {
    const commitAndWait = async (answer: (r: ImageStreamReceiver) => void): Promise<unknown> => {
      const [src, dst] = await socketPair();
      const sender = new ImageStreamSender(src);
      const receiver = new ImageStreamReceiver(dst);
      sender.hello({ migrationId: 'pc', engine: 'criu', postCopy: { pids: [7], pidNamespace: true } });
      expect((await receiver.readHello('pc')).postCopy).toEqual({ pids: [7], pidNamespace: true });
      const receiving = receiver.receive(tmp(), undefined);
      const acked = sender.finish({ files: [], pageBytes: 0 });
      await receiving;
      await receiver.ack({ files: 0, bytes: 0 });
      await acked;
      const committing = receiver.awaitCommit();
      await sender.commit({ sourceStopped: true }, { awaitFilled: true });
      await committing;
      answer(receiver);
      return sender.filled().then(
        () => 'filled',
        (e: unknown) => e,
      );
    };
    expect(await commitAndWait((r) => r.filled())).toBe('filled');
    const refused = await commitAndWait((r) => r.notFilled('the lazy-pages daemon died'));
    expect(refused).toBeInstanceOf(ImageStreamError);
    expect((refused as ImageStreamError).message).toMatch(/the lazy-pages daemon died/);
    // A target that just goes away (a clean close) is not a confirmation.
    const gone = await commitAndWait((r) => r.close());
    expect(gone).toBeInstanceOf(ImageStreamError);
    expect((gone as ImageStreamError).message).toMatch(/closed the connection before every page was in place/);
  });

  it('refuses a stream for another migration', async () => {
    const [src, dst] = await socketPair();
    new ImageStreamSender(src).hello({ migrationId: 'other', engine: 'criu' });
    const err = await new ImageStreamReceiver(dst).readHello('mine').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageStreamError);
    expect((err as ImageStreamError).code).toBe('INVALID_REQUEST');
    src.destroy();
    dst.destroy();
  });

  it("the receiver's failure reaches the sender with its code", async () => {
    const [src, dst] = await socketPair();
    const local = tmp();
    writeFileSync(join(local, 'a.img'), 'a');
    const sender = new ImageStreamSender(src);
    const receiver = new ImageStreamReceiver(dst);
    sender.hello({ migrationId: 'm', engine: 'criu' });
    await receiver.readHello();
    receiver.abort({ code: 'IMAGE_INVALID', status: 'fatal', message: 'disk says no' });
    const err = await (async () => {
      const f = await sender.sendFile(local, 'a.img');
      return sender.finish({ files: [f], pageBytes: 0 });
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageStreamError);
    expect((err as ImageStreamError).code).toBe('IMAGE_INVALID');
    expect((err as ImageStreamError).fromPeer).toBe(true);
    expect((err as Error).message).toMatch(/disk says no/);
  });

  it('a receiver rejects path tricks and truncated files', async () => {
    for (const bad of [
      (w: FrameWriter) => w.json(FRAME.FILE_BEGIN, { name: '../evil', size: 1 }),
      (w: FrameWriter) => {
        w.json(FRAME.FILE_BEGIN, { name: 'a.img', size: 10 });
        w.send(FRAME.FILE_DATA, Buffer.from('abc'));
        w.json(FRAME.FILE_END, { name: 'a.img', size: 10 });
      },
      (w: FrameWriter) => w.json(FRAME.DONE, { files: [{ name: 'missing.img', size: 1 }], pageBytes: 0 }),
    ]) {
      const [src, dst] = await socketPair();
      const w = new FrameWriter(src);
      w.json(FRAME.HELLO, { protocol: 'spotwatch-criu-image/1', migrationId: 'm', engine: 'criu' });
      bad(w);
      const receiver = new ImageStreamReceiver(dst);
      await receiver.readHello();
      const err = await receiver.receive(tmp(), undefined).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageStreamError);
      expect((err as Error).message).toMatch(/protocol error/);
      src.destroy();
      dst.destroy();
    }
  });

  it('a connection that closes early is a retryable transport failure', async () => {
    const [src, dst] = await socketPair();
    const receiver = new ImageStreamReceiver(dst);
    src.end();
    const err = await receiver.readHello().catch((e: unknown) => e);
    expect((err as ImageStreamError).code).toBe('TRANSPORT_FAILED');
    expect((err as ImageStreamError).status).toBe('retryable');
  });
});
