import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { isSafeImageFileName } from '../engines/criu/image-stream.js';
import { readLine } from '../util/stream-read.js';

/**
 * Forwarding a complete image directory from one target to another, when the restore failed on the first
 * target and the image is the only copy of the task left. (The engine's own stream is for a live dump; this
 * moves files that already exist.) On an authenticated agent connection:
 *
 *   SWDIR1\n
 *   {"migrationId": "...", "files": [{"name": "...", "size": N}, ...]}\n
 *   <bytes of each file, in order>
 *   ← OK\n   (or ERR <reason>\n)
 */
export const FORWARD_MAGIC = 'SWDIR1\n';
/**
 * The same framing for the files a task staged before its checkpoint (task-stage.ts): the target keeps them beside
 * its images until the task resumes there. Same length as {@link FORWARD_MAGIC}: the receiver reads one prefix.
 */
export const STAGE_MAGIC = 'SWSTG1\n';
const MAX_HEADER = 1024 * 1024;

export interface ForwardHeader {
  migrationId: string;
  files: { name: string; size: number }[];
}

/** Sends every regular file of `directory` and waits for the receiver's verdict. */
export async function sendImageDirectory(conn: Duplex, directory: string, migrationId: string, magic: string = FORWARD_MAGIC): Promise<number> {
  const files = readdirSync(directory)
    .filter((name) => statSync(join(directory, name)).isFile())
    .map((name) => ({ name, size: statSync(join(directory, name)).size }));
  const reply = readLine(conn, MAX_HEADER);
  conn.write(`${magic}${JSON.stringify({ migrationId, files } satisfies ForwardHeader)}\n`);
  for (const file of files) {
    for await (const chunk of createReadStream(join(directory, file.name), { highWaterMark: 4 * 1024 * 1024 })) {
      if (!conn.write(chunk as Buffer)) await once(conn, 'drain');
    }
  }
  const answer = await reply;
  if (answer !== 'OK') throw new Error(`the receiving agent refused the files: ${answer}`);
  conn.end();
  return files.reduce((n, f) => n + f.size, 0);
}

/**
 * Reads a forwarded image (after FORWARD_MAGIC) into `directory`; answers OK once every byte is on disk.
 * File names are checked like the engine's own stream (no paths, no traversal).
 */
export async function receiveImageDirectory(conn: Duplex, directory: string): Promise<{ header: ForwardHeader; bytes: number }> {
  const header = JSON.parse(await readLine(conn, MAX_HEADER)) as ForwardHeader;
  if (typeof header.migrationId !== 'string' || !Array.isArray(header.files)) throw new Error('malformed image forward header');
  for (const f of header.files) {
    if (!isSafeImageFileName(f.name) || !Number.isSafeInteger(f.size) || f.size < 0) throw new Error(`refusing image file ${JSON.stringify(f.name)}`);
  }
  mkdirSync(directory, { recursive: true });
  let index = 0;
  let left = header.files[0]?.size ?? 0;
  let out: WriteStream | undefined;
  const openNext = () => {
    while (index < header.files.length && header.files[index]!.size === 0) {
      createWriteStream(join(directory, header.files[index]!.name)).end();
      index++;
    }
    if (index < header.files.length) {
      // A deep buffer: the socket delivers 64 KiB at a time, and waiting for the file after each would halve the rate.
      out = createWriteStream(join(directory, header.files[index]!.name), { highWaterMark: 8 * 1024 * 1024 });
      left = header.files[index]!.size;
    } else out = undefined;
  };
  const closing: Promise<unknown>[] = [];
  openNext();
  let bytes = 0;
  if (out) {
    // The connection stays open after the last file (the OK goes back on it): stop iterating without destroying it.
    for await (const raw of (conn as Duplex & { iterator(o: { destroyOnReturn: boolean }): AsyncIterable<Buffer> }).iterator({ destroyOnReturn: false })) {
      let chunk = raw as Buffer;
      while (chunk.length > 0 && out) {
        const take = Math.min(left, chunk.length);
        if (!out.write(chunk.subarray(0, take))) await once(out, 'drain');
        bytes += take;
        left -= take;
        chunk = chunk.subarray(take);
        if (left === 0) {
          const done = out;
          closing.push(new Promise((resolve) => done.end(resolve)));
          index++;
          openNext();
        }
      }
      if (!out) break;
    }
  }
  await Promise.all(closing);
  if (index < header.files.length) throw new Error(`image forward ended early: ${header.files.length - index} file(s) missing`);
  conn.write('OK\n');
  return { header, bytes };
}
