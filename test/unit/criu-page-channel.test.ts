import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FRAME, ImageStreamReceiver, ImageStreamSender, pumpPages, sendPageChannelFrame } from '../../src/engines/criu/image-stream.js';
import { isPlainSocket, offerPageChannel, takePageChannel } from '../../src/engines/criu/page-channel.js';
import { listenForImageStreams, openTcp } from '../../src/engines/criu/transport.js';

/** Two connected TCP sockets on loopback. */
async function socketPair(): Promise<[Socket, Socket]> {
  return new Promise((resolve) => {
    let b: Socket;
    const server = createServer((a) => {
      server.close();
      resolve([a, b]);
    });
    server.listen(0, '127.0.0.1', () => {
      b = connect((server.address() as { port: number }).port, '127.0.0.1');
    });
  });
}

describe('direct page channel', () => {
  it('pumps the dump side into the channel unframed and the replies back, ending cleanly when the page server closes first', async () => {
    const [dumpSide, dumpCriu] = await socketPair(); // stands in for criu dump's socketpair
    const [channel, pageServer] = await socketPair(); // the channel; its far end stands in for criu page-server
    let psGot = 0;
    pageServer.on('data', (d: Buffer) => {
      psGot += d.length;
      if (d.includes(0x3f)) pageServer.end('ok'); // answers the flush and closes, as the page server does
    });
    let dumpGot = '';
    dumpCriu.on('data', (d: Buffer) => {
      dumpGot += d.toString();
      if (dumpGot === 'ok') dumpCriu.end();
    });
    const pumping = pumpPages(dumpSide, channel, () => undefined);
    dumpCriu.write(Buffer.alloc(9 * 1024 * 1024, 1)); // more than the relay's queue: exercises backpressure
    dumpCriu.write('?');
    const bytes = await pumping;
    expect(bytes).toBe(9 * 1024 * 1024 + 1);
    expect(psGot).toBe(bytes);
    expect(dumpGot).toBe('ok');
  });

  it('fails when the channel is reset in the middle', async () => {
    const [dumpSide, dumpCriu] = await socketPair();
    const [channel, pageServer] = await socketPair();
    const pumping = pumpPages(dumpSide, channel, () => undefined);
    dumpCriu.write(Buffer.alloc(1024, 1));
    pageServer.once('data', () => pageServer.resetAndDestroy());
    await expect(pumping).rejects.toThrow(/page channel/);
    dumpCriu.destroy();
  });

  it('the listener routes a PAGES_CHANNEL connection to its waiting receive and leaves image streams intact', async () => {
    const streams: Duplex[] = [];
    const listener = await listenForImageStreams({ onConnection: (conn) => streams.push(conn) });
    try {
      const id = 'ab'.repeat(16);
      const waiting = takePageChannel(id, 5000);
      const second = await openTcp({ host: listener.host, port: listener.port }, AbortSignal.timeout(5000));
      sendPageChannelFrame(second, id);
      const channel = await waiting;
      expect(channel).toBeDefined();
      expect(isPlainSocket(channel!)).toBe(true);
      expect(streams).toHaveLength(0);

      const first = await openTcp({ host: listener.host, port: listener.port }, AbortSignal.timeout(5000));
      new ImageStreamSender(first).hello({ migrationId: 'm-route', engine: 'criu', pageChannel: id });
      for (let i = 0; i < 200 && streams.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      const hello = await new ImageStreamReceiver(streams[0]!).readHello('m-route');
      expect(hello.pageChannel).toBe(id);
      for (const s of [first, second, channel!, ...streams]) s.destroy();
    } finally {
      await listener.close();
    }
  });

  it('keeps an early channel until it is taken, and gives up on one that never comes', async () => {
    const [a, b] = await socketPair();
    offerPageChannel('cd'.repeat(16), a);
    expect(await takePageChannel('cd'.repeat(16), 10)).toBe(a);
    expect(await takePageChannel('ef'.repeat(16), 10)).toBeUndefined();
    a.destroy();
    b.destroy();
    expect(FRAME.PAGES_CHANNEL).not.toBe(FRAME.PAGES_MODE);
  });
});
