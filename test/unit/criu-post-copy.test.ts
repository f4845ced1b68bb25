import { describe, expect, it } from 'vitest';
import { lazyPagesInPagemap } from '../../src/engines/criu/criu-log.js';
import { isMountPoint } from '../../src/engines/criu/kerndat-cache.js';
import { criuCommand } from '../../src/engines/criu/criu-binary.js';
import { isPidNamespaceRoot, seizedAtFromLog } from '../../src/engines/criu/post-copy.js';
import { postCopyFitsDeadline } from '../../src/migration/node-runtime.js';

/** A protobuf varint. */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** A pagemap image: two magic words, a pagemap_head, then entries (vaddr, flags, nr_pages). */
function pagemap(entries: { vaddr: number; flags: number; pages: number }[]): Buffer {
  const message = (fields: [number, number][]): Buffer => Buffer.from(fields.flatMap(([f, v]) => [...varint(f * 8), ...varint(v)]));
  const parts = [Buffer.alloc(8, 0x19), ...[message([[1, 1]]), ...entries.map((e) => message([[1, e.vaddr], [4, e.flags], [5, e.pages]]))].flatMap((m) => {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(m.length);
    return [len, m];
  })];
  return Buffer.concat(parts);
}

describe('post-copy helpers', () => {
  it('counts the pages a post-copy dump left for the target (flag PE_LAZY), not the ones in pages-N.img', () => {
    const image = pagemap([
      { vaddr: 0x400000, flags: 4, pages: 3 }, // present: sent with the image
      { vaddr: 0x7f0000000000, flags: 2, pages: 16384 }, // lazy
      { vaddr: 0x7f1000000000, flags: 2, pages: 5 },
    ]);
    expect(lazyPagesInPagemap(image)).toBe(16389);
    expect(lazyPagesInPagemap(Buffer.alloc(8))).toBe(0);
    expect(lazyPagesInPagemap(image.subarray(0, image.length - 3))).toBe(16384); // a cut entry is not counted
  });

  it("places the freeze from CRIU's log, relative to when it said it was ready", () => {
    const log = '(00.000012) Version: 4.2.1\n(00.004500) Seized task 42, state 1\n(00.027500) Running status-ready scripts\n';
    expect(seizedAtFromLog(log, 1_000, 2_000)).toBe(1_977);
    // never before the dump started; without the lines, the dump's start (downtime over-, never under-counted)
    expect(seizedAtFromLog(log, 1_990, 2_000)).toBe(1_990);
    expect(seizedAtFromLog('(00.000012) Version: 4.2.1\n', 1_000, 2_000)).toBe(1_000);
  });

  it('uses post-copy only where pulling the memory ends well before the deadline (the source takes it along)', () => {
    const MiB = 1024 * 1024;
    // measured 200 MB/s: 1 GiB in ~5 s fits in 60 s left, not in 8 s
    expect(postCopyFitsDeadline(1024 * MiB, 200 * MiB, 60_000)).toEqual({ fits: true, pullMs: 5120 });
    expect(postCopyFitsDeadline(1024 * MiB, 200 * MiB, 8_000).fits).toBe(false);
    // nothing measured yet: a slow default (64 MiB/s), so 20 GiB never goes post-copy within a 120 s notice
    expect(postCopyFitsDeadline(20 * 1024 * MiB, undefined, 120_000)).toEqual({ fits: false, pullMs: 320_000 });
    expect(postCopyFitsDeadline(256 * MiB, 0, 120_000).fits).toBe(true);
  });

  it('tells a pid namespace of its own from a process in this one', () => {
    expect(isPidNamespaceRoot(process.pid)).toBe(false);
    expect(isPidNamespaceRoot(999_999_999)).toBe(false);
  });
});

describe('running CRIU', () => {
  it("finds the kernel-feature cache's bind mount in mountinfo (octal escapes too)", () => {
    const info = '42 27 0:27 /spotwatch-criu.kdat /run/criu.kdat rw,relatime - tmpfs tmpfs rw\n43 27 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw\n';
    expect(isMountPoint('/run/criu.kdat', info)).toBe(true);
    expect(isMountPoint('/mnt/with space', info)).toBe(true);
    expect(isMountPoint('/run', info)).toBe(false);
  });

  it("starts the private install's loader directly where it knows how, the path otherwise", () => {
    expect(criuCommand({ path: '/usr/sbin/criu' }, ['check'])).toEqual({ file: '/usr/sbin/criu', args: ['check'] });
    expect(criuCommand({ path: '/r/.criu/bin/criu', exec: { file: '/r/.criu/ld.so', args: ['--library-path', '/r/.criu/lib', '/r/.criu/criu'] } }, ['dump', '-t', '1'])).toEqual({
      file: '/r/.criu/ld.so',
      args: ['--library-path', '/r/.criu/lib', '/r/.criu/criu', 'dump', '-t', '1'],
    });
  });
});
