import type { Duplex } from 'node:stream';

/**
 * Reading a few bytes at the head of a connection whose rest belongs to another reader (a handshake line, a
 * protocol marker): nothing past what was asked for is consumed — it is pushed back onto the stream.
 */
function readUntil(conn: Duplex, take: (buffered: Buffer) => number | 'more' | Error, onEnd: (buffered: Buffer) => Buffer | Error, signal?: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const cleanup = () => {
      conn.off('readable', onReadable);
      conn.off('end', onEnded);
      conn.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = conn.read() as Buffer | null) !== null) {
        buffered = Buffer.concat([buffered, chunk]);
        const verdict = take(buffered);
        if (verdict === 'more') continue;
        cleanup();
        if (verdict instanceof Error) return reject(verdict);
        if (verdict < buffered.length) conn.unshift(buffered.subarray(verdict));
        return resolve(buffered.subarray(0, verdict));
      }
    };
    const onEnded = () => {
      cleanup();
      const result = onEnd(buffered);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAbort = () => {
      cleanup();
      reject(new Error('timed out waiting for the peer'));
    };
    if (signal?.aborted) return onAbort();
    conn.on('readable', onReadable);
    conn.once('end', onEnded);
    conn.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    onReadable();
  });
}

/** One `\n`-terminated line (without the newline), at most `max` bytes. */
export async function readLine(conn: Duplex, max: number, signal?: AbortSignal): Promise<string> {
  const line = await readUntil(
    conn,
    (b) => {
      const nl = b.indexOf(0x0a);
      if (nl >= 0) return nl + 1;
      return b.length > max ? new Error('line too long') : 'more';
    },
    () => new Error('the peer closed the connection before a full line'),
    signal,
  );
  return line.subarray(0, line.length - 1).toString('utf8');
}

/** Exactly `n` bytes, or fewer when the peer ends first. */
export function readExactly(conn: Duplex, n: number): Promise<Buffer> {
  return readUntil(
    conn,
    (b) => (b.length >= n ? n : 'more'),
    (b) => b,
  );
}
