import { describe, expect, it } from 'vitest';
import { dumpedBytes, estimateTree, isDying, needsShellJob, parseProcStat, parseSmapsRollup, processTree, taskState } from '../../src/engines/criu/proc.js';

describe('/proc parsing', () => {
  it('reads /proc/PID/stat, even with spaces and parentheses in the command name', () => {
    expect(parseProcStat('6471 (node) S 1 6471 6471 0 -1 4194560 2040')).toEqual({ pid: 6471, state: 'S', ppid: 1, pgrp: 6471, session: 6471, ttyNr: 0, flags: 4194560 });
    expect(parseProcStat('12 (a (b) c) T 3 4 5 34817 -1')).toEqual({ pid: 12, state: 'T', ppid: 3, pgrp: 4, session: 5, ttyNr: 34817, flags: 0 });
    expect(parseProcStat('garbage')).toBeUndefined();
  });

  it('tells a pid that frees itself (zombie, or exiting: PF_EXITING) from a live one', () => {
    const live = parseProcStat('751 (python3) S 1 751 751 0 -1 4194560 2040')!;
    expect(isDying(live)).toBe(false);
    expect(isDying({ ...live, state: 'Z' })).toBe(true);
    expect(isDying(parseProcStat('751 (python3) R 1 751 751 0 -1 4194564 2040'))).toBe(true); // 0x4 set: exiting
    expect(isDying(undefined)).toBe(false);
  });

  it('reads smaps_rollup into bytes and counts what a dump carries', () => {
    const s = parseSmapsRollup(`55d0c8a2e000-7ffd1d5f8000 ---p 00000000 00:00 0                          [rollup]
Rss:              115620 kB
Pss_Anon:          75360 kB
Pss_Shmem:           100 kB
Anonymous:         75360 kB
Swap:                 40 kB
`);
    expect(s.Rss).toBe(115620 * 1024);
    expect(dumpedBytes(s)).toBe((75360 + 100 + 40) * 1024);
  });

  it('wants --shell-job only for a tree tied to a terminal or to a session outside it', () => {
    const own = { pid: 10, state: 'S', ppid: 1, pgrp: 10, session: 10, ttyNr: 0, flags: 0 };
    expect(needsShellJob(own, [10, 11])).toBe(false);
    expect(needsShellJob({ ...own, session: 5 }, [10, 11])).toBe(true);
    expect(needsShellJob({ ...own, pgrp: 9 }, [10, 11])).toBe(true);
    expect(needsShellJob({ ...own, ttyNr: 34817 }, [10])).toBe(true);
  });
});

describe('live /proc', () => {
  it('sees this process running, a missing pid gone, and estimates this process', async () => {
    expect(await taskState(process.pid)).toBe('running');
    expect(await taskState(4_000_000)).toBe('gone');
    expect((await processTree(process.pid))[0]).toBe(process.pid);
    expect(await processTree(4_000_000)).toEqual([]);
    const est = await estimateTree(process.pid);
    expect(est?.memoryBytes).toBeGreaterThan(1024 * 1024);
    expect(est?.imageBytes).toBeGreaterThan(est!.memoryBytes);
    expect(est?.threads).toBeGreaterThanOrEqual(1);
    expect(await estimateTree(4_000_000)).toBeUndefined();
  });
});
