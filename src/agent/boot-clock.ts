import { readFileSync } from 'node:fs';

/** The machine's boot time could not be read (no /proc: not Linux, or a sandbox without it). */
export class BootClockError extends Error {
  readonly code = 'BOOT_TIME_UNAVAILABLE' as const;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BootClockError';
  }
}

/**
 * The clocks that tell when this machine last came up. Injectable: tests play a reboot or a resume from
 * hibernation with a clock of their own (see {@link fixedBootClock}).
 */
export interface BootClock {
  /** Wall-clock time (ms since the epoch) this machine booted. Throws {@link BootClockError} when unknown. */
  bootTime(): number;
  /** Ms since boot, time suspended included (CLOCK_BOOTTIME, as in /proc/uptime). */
  sinceBootMs(): number;
  /** Ms of a clock that stands still while the machine is suspended (CLOCK_MONOTONIC). */
  monotonicMs(): number;
}

/** Linux: `btime` of /proc/stat (whole seconds), else now minus /proc/uptime; process.hrtime for the monotonic clock. */
export const procBootClock: BootClock = {
  bootTime: () => readBootTime(),
  sinceBootMs: () => readUptimeMs(),
  // libuv's hrtime is CLOCK_MONOTONIC on Linux: it does not advance while the machine is suspended.
  monotonicMs: () => Number(process.hrtime.bigint() / 1_000_000n),
};

/** A machine that booted at `bootTime` and never slept since (for tests and tools). */
export function fixedBootClock(bootTime: number, now: () => number = Date.now): BootClock {
  return { bootTime: () => bootTime, sinceBootMs: () => now() - bootTime, monotonicMs: () => now() - bootTime };
}

/** Boot time in ms since the epoch, from /proc/stat's `btime`, or from /proc/uptime when that is missing. */
export function readBootTime(read: (path: string) => string = (p) => readFileSync(p, 'utf8'), now = Date.now()): number {
  let stat: string | undefined;
  try {
    stat = read('/proc/stat');
  } catch {
    // fall through to /proc/uptime
  }
  const btime = stat ? /^btime\s+(\d+)\s*$/m.exec(stat)?.[1] : undefined;
  if (btime) return Number(btime) * 1000;
  try {
    return now - readUptimeMs(read);
  } catch (err) {
    throw new BootClockError('cannot tell when this machine booted: /proc/stat has no btime and /proc/uptime is unreadable', { cause: err });
  }
}

/** Seconds since boot from /proc/uptime (suspended time included), in ms. */
export function readUptimeMs(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number {
  let text: string;
  try {
    text = read('/proc/uptime');
  } catch (err) {
    throw new BootClockError('cannot read /proc/uptime', { cause: err });
  }
  const seconds = Number(text.trim().split(/\s+/)[0]);
  if (!Number.isFinite(seconds) || seconds < 0) throw new BootClockError(`/proc/uptime is not a number of seconds: ${JSON.stringify(text.slice(0, 40))}`);
  return Math.round(seconds * 1000);
}

/**
 * Since when this machine has run without interruption: its boot, or its last resume from hibernation or
 * suspend (an AWS hibernated spot instance resumes with its old boot time, agent and all, so a reboot check
 * alone never sees it come back). A resume shows as CLOCK_BOOTTIME running ahead of CLOCK_MONOTONIC.
 *
 * Each estimate is the earliest the run can have begun, so a drain is never taken for older than it is.
 */
export class AwakeTracker {
  private since: number;
  private cause: 'boot' | 'resume' = 'boot';
  private lastBoot: number;
  private lastMono: number;

  constructor(
    private readonly clock: BootClock,
    private readonly now: () => number = Date.now,
    /** Suspended time that counts as a resume (clock reads and rounding are far below this). */
    private readonly thresholdMs = 1000,
  ) {
    const boot = clock.bootTime();
    this.lastBoot = clock.sinceBootMs();
    this.lastMono = clock.monotonicMs();
    // Time suspended since boot, before this process started: the last resume came after at least that much
    // sleep, so boot + suspended is a lower bound of its time (a bogus negative difference counts as none).
    const suspended = this.lastBoot - this.lastMono;
    if (suspended >= thresholdMs) {
      this.since = boot + suspended;
      this.cause = 'resume';
    } else {
      this.since = boot;
    }
  }

  /** Start of the current run (ms since the epoch). */
  get awakeSince(): number {
    return this.since;
  }

  /** What began the current run. */
  get wokeBy(): 'boot' | 'resume' {
    return this.cause;
  }

  /** Reads the clocks again; true when the machine was suspended since the last call (the run began anew). */
  poll(): boolean {
    const boot = this.clock.sinceBootMs();
    const mono = this.clock.monotonicMs();
    const monoElapsed = mono - this.lastMono;
    const suspended = boot - this.lastBoot - monoElapsed;
    this.lastBoot = boot;
    this.lastMono = mono;
    if (suspended < this.thresholdMs) return false;
    // The sleep fell somewhere in this interval; the earliest the machine can have woken is the interval's
    // running time ago.
    this.since = this.now() - monoElapsed;
    this.cause = 'resume';
    return true;
  }
}
