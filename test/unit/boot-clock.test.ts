import { describe, expect, it } from 'vitest';
import { AwakeTracker, BootClockError, fixedBootClock, readBootTime, readUptimeMs, type BootClock } from '../../src/agent/boot-clock.js';

const files = (map: Record<string, string>) => (path: string) => {
  const text = map[path];
  if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
  return text;
};

/** A machine whose clocks the test moves: wall time, and how long it has slept since boot. */
function sleepyClock(bootTime: number) {
  const state = { now: bootTime + 3_600_000, slept: 0 };
  const clock: BootClock = {
    bootTime: () => bootTime,
    sinceBootMs: () => state.now - bootTime,
    monotonicMs: () => state.now - bootTime - state.slept,
  };
  return { state, clock, now: () => state.now };
}

describe('boot clock', () => {
  it('reads btime from /proc/stat, else now minus /proc/uptime', () => {
    expect(readBootTime(files({ '/proc/stat': 'cpu  1 2 3\nintr 5\nbtime 1795615122\nprocesses 9\n' }))).toBe(1795615122_000);
    expect(readBootTime(files({ '/proc/stat': 'cpu 1\n', '/proc/uptime': '120.50 200.00\n' }), 1_000_000)).toBe(1_000_000 - 120_500);
    expect(readUptimeMs(files({ '/proc/uptime': '3.25 1.00' }))).toBe(3250);
  });

  it('fails with a stable code when neither file says', () => {
    expect(() => readBootTime(files({}))).toThrow(BootClockError);
    let thrown: unknown;
    try {
      readBootTime(files({ '/proc/uptime': 'garbage' }));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(BootClockError);
    expect((thrown as BootClockError).code).toBe('BOOT_TIME_UNAVAILABLE');
  });

  it('a machine that never slept has run since its boot', () => {
    const t = new AwakeTracker(fixedBootClock(1_000_000, () => 5_000_000));
    expect(t.awakeSince).toBe(1_000_000);
    expect(t.wokeBy).toBe('boot');
    expect(t.poll()).toBe(false);
  });

  it('sees a resume from hibernation and dates it no later than it can have been', () => {
    const boot = 1_000_000_000;
    const m = sleepyClock(boot);
    const t = new AwakeTracker(m.clock, m.now);
    expect(t.awakeSince).toBe(boot);
    m.state.now += 2000;
    expect(t.poll()).toBe(false);
    // Two seconds of running, a ten-minute hibernation, one more second of running.
    m.state.now += 2000 + 600_000 + 1000;
    m.state.slept += 600_000;
    const polledAt = m.state.now;
    expect(t.poll()).toBe(true);
    expect(t.wokeBy).toBe('resume');
    expect(t.awakeSince).toBe(polledAt - 3000);
    m.state.now += 2000;
    expect(t.poll()).toBe(false);
    expect(t.awakeSince).toBe(polledAt - 3000);
  });

  it('an agent started after a resume dates the run no earlier than boot plus the time slept', () => {
    const boot = 1_000_000_000;
    const m = sleepyClock(boot);
    m.state.slept = 900_000;
    const t = new AwakeTracker(m.clock, m.now);
    expect(t.wokeBy).toBe('resume');
    expect(t.awakeSince).toBe(boot + 900_000);
  });
});
