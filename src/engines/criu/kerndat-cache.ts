/**
 * CRIU's kernel-feature cache where the host does not keep it.
 *
 * Every `criu` run starts by probing the kernel (a compat vDSO helper, hardware breakpoints, userfaultfd, sockets…):
 * about 35 ms on the CI machine, paid by the dump, by `criu lazy-pages` and by the restore — the last two inside the
 * task's downtime. CRIU keeps the result in `/run/criu.kdat`, but only where `/run` is a tmpfs, so that a reboot
 * (maybe into another kernel) drops it. systemd hosts have that; some containers and VMs (this CI machine) do not,
 * and there every run probes again.
 *
 * There the agent provides the cache the same way CRIU would, with the same lifetime: CRIU probes once in a private
 * mount namespace whose `/run` is a tmpfs (`unshare`), the file it writes is kept on a tmpfs here
 * (`/dev/shm/spotwatch-criu.kdat`), and that file is bind-mounted onto `/run/criu.kdat`. A reboot drops both the
 * tmpfs and the mount; what is left at `/run/criu.kdat` is the empty mount point, which CRIU reads as stale and
 * removes. The probe runs again at every agent start (a new CRIU build must not read an older one's cache — CRIU
 * checks a build stamp too), in place, so concurrent readers see the old or the new file (a short read counts as
 * stale for CRIU: it probes, nothing worse).
 */
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { CriuBinary } from './criu-binary.js';
import { criuCommand } from './criu-binary.js';

const TMPFS_MAGIC = 0x01021994;
/** Where CRIU looks for its cache when it runs as root (compiled in: KDAT_RUNDIR "/criu.kdat"). */
export const CRIU_KDAT_PATH = '/run/criu.kdat';
/** The cache's backing file: on a tmpfs, so it goes with a reboot. */
export const KDAT_BACKING_PATH = '/dev/shm/spotwatch-criu.kdat';

export type KerndatCacheMode = 'auto' | 'off';

export interface KerndatCacheState {
  /**
   * `native`: `/run` is a tmpfs, CRIU caches by itself; `provided`: the agent probed and bound the cache;
   * `off`: turned off; `unavailable`: could not be provided (`reason` says why) — every CRIU run probes.
   */
  status: 'native' | 'provided' | 'off' | 'unavailable';
  reason?: string;
  /** How long the one probe took (provided only). */
  probeMs?: number;
}

function isTmpfs(path: string): boolean {
  try {
    return statfsSync(path).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * `off` means no cache from spotwatch: one an earlier agent bound onto `/run/criu.kdat` (its mount's root is our
 * backing file) is unmounted and removed. True when there was one.
 */
async function removeProvidedCache(timeoutMs: number): Promise<boolean> {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return false;
  }
  if (mountRootAt(CRIU_KDAT_PATH, info) !== `/${basename(KDAT_BACKING_PATH)}`) return false;
  try {
    await run('umount', [CRIU_KDAT_PATH], timeoutMs);
    rmSync(CRIU_KDAT_PATH, { force: true });
    rmSync(KDAT_BACKING_PATH, { force: true });
    return true;
  } catch {
    return false;
  }
}

/**
 * The root (field 4: what of its filesystem is mounted) of the mount at exactly `path` in `mountinfo`, or undefined
 * when nothing is mounted there. Fields are octal-escaped (spaces and the like).
 */
function mountRootAt(path: string, mountinfo: string): string | undefined {
  const unescape = (f: string | undefined): string | undefined => f?.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (unescape(f[4]) === path) return unescape(f[3]);
  }
  return undefined;
}

/** True when something is mounted at exactly `path` (this mount namespace). */
export function isMountPoint(path: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): boolean {
  return mountRootAt(path, mountinfo) !== undefined;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'buffer', timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.slice(0, 3).join(' ')}… failed: ${stderr.toString().trim() || err.message}`, { cause: err }));
      else resolve({ stdout, stderr: stderr.toString() });
    });
  });
}

/** Runs `criu check` where `/run` is a private tmpfs and returns the cache file it wrote there. */
async function probe(criu: CriuBinary, timeoutMs: number): Promise<Buffer> {
  const { file, args } = criuCommand(criu, ['check']);
  // $0.. are the criu command line; the cache is printed on stdout, CRIU's own output goes to stderr.
  const script = 'mount -t tmpfs -o size=1m spotwatch-kdat /run && "$@" >/dev/null 2>&1; cat /run/criu.kdat';
  const { stdout } = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'criu', file, ...args], timeoutMs);
  if (stdout.length === 0) throw new Error('criu check wrote no kernel-feature cache in a private tmpfs /run');
  return stdout;
}

/**
 * Makes sure CRIU finds its kernel-feature cache (see the file comment). Never throws: what happened is returned,
 * and on any failure CRIU simply probes at every run, as before.
 */
export async function prepareKerndatCache(criu: CriuBinary, mode: KerndatCacheMode = 'auto', timeoutMs = 20_000): Promise<KerndatCacheState> {
  if (mode === 'off') return (await removeProvidedCache(timeoutMs)) ? { status: 'off', reason: 'removed the cache an earlier agent had provided' } : { status: 'off' };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return { status: 'unavailable', reason: 'not root' };
  if (isTmpfs('/run')) return { status: 'native' };
  if (!isTmpfs('/dev/shm')) return { status: 'unavailable', reason: '/dev/shm is not a tmpfs either' };
  const started = Date.now();
  try {
    const cache = await probe(criu, timeoutMs);
    // In place: truncate and write the same inode (a bind mount follows the inode, not the name).
    writeFileSync(KDAT_BACKING_PATH, cache, { mode: 0o600 });
    if (!isMountPoint(CRIU_KDAT_PATH)) {
      if (!existsSync(CRIU_KDAT_PATH)) closeSync(openSync(CRIU_KDAT_PATH, 'a', 0o600));
      await run('mount', ['--bind', KDAT_BACKING_PATH, CRIU_KDAT_PATH], timeoutMs);
    }
    return { status: 'provided', probeMs: Date.now() - started };
  } catch (err) {
    return { status: 'unavailable', reason: (err as Error).message };
  }
}
