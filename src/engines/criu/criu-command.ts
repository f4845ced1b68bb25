/**
 * Command lines for `criu dump`, `criu restore` and `criu page-server`, built from typed options. Pure: no I/O,
 * so every flag choice is unit-tested.
 */

/** `--manage-cgroups` modes. `ignore` (the default here) leaves cgroups alone on dump and restore. */
export type CgroupMode = 'ignore' | 'none' | 'props' | 'soft' | 'full' | 'strict';

/** The options that must match between a dump and its restore; recorded in the image's manifest. */
export interface CriuTaskOptions {
  /** `--shell-job`: the tree's session / process group is led from outside it, or it has a terminal. */
  shellJob: boolean;
  /** `--tcp-established`: carry established TCP connections (the address must move with the task). */
  tcpEstablished: boolean;
  /** `--ext-unix-sk`: allow unix sockets whose peer is outside the tree (e.g. /dev/log). */
  extUnixSk: boolean;
  /** `--file-locks`: carry flock/posix locks. */
  fileLocks: boolean;
  /** `--manage-cgroups=MODE`. */
  manageCgroups: CgroupMode;
  /** `--network-lock`: how TCP connections are locked while frozen (`nftables` needs no iptables binary). */
  networkLock: 'nftables' | 'iptables' | 'skip';
}

export interface DumpArgs extends CriuTaskOptions {
  pid: number;
  /** `-D`: where CRIU writes the images (with a page server: all but the memory pages). */
  imagesDir: string;
  /** `-o`: log file name, relative to the images dir. */
  logFile: string;
  /** `-v`: 0–4. */
  logLevel: number;
  /** `--link-remap`: open files that were unlinked or are otherwise unreachable are carried through links. */
  linkRemap: boolean;
  /** After a successful dump: `kill` (CRIU's default), `--leave-running`, or `--leave-stopped`. */
  after: 'kill' | 'leave-running' | 'leave-stopped';
  /** Send memory pages to a page server: over an inherited socket fd, or to an address. */
  pageServer?: { psSocketFd: number } | { address: string; port: number };
  /**
   * Post-copy from the source (`--lazy-pages`): the dump writes everything but the tree's anonymous memory, then
   * serves that memory from the frozen tree over this inherited, connected socket to the target's `criu lazy-pages
   * --page-server` (buildLazyPagesArgs), until every page has moved. Excludes `pageServer`.
   */
  lazyPages?: { psSocketFd: number };
  /** `--status-fd`: CRIU writes one byte there when ready (with `lazyPages`: the frozen part is over, images written). */
  statusFd?: number;
  /** `--timeout`: seconds CRIU may spend freezing the tree. */
  freezeTimeoutSec?: number;
  /** Appended as is (for experiments and tests). */
  extraArgs?: readonly string[];
}

function taskFlags(o: CriuTaskOptions): string[] {
  const a: string[] = [];
  if (o.shellJob) a.push('--shell-job');
  if (o.tcpEstablished) a.push('--tcp-established', '--network-lock', o.networkLock);
  if (o.extUnixSk) a.push('--ext-unix-sk');
  if (o.fileLocks) a.push('--file-locks');
  a.push(`--manage-cgroups=${o.manageCgroups}`);
  return a;
}

function checkLevel(level: number): number {
  if (!Number.isInteger(level) || level < 0 || level > 4) throw new RangeError(`criu log level must be 0..4, got ${level}`);
  return level;
}

/** `criu dump -t PID` for the whole tree rooted at PID. */
export function buildDumpArgs(o: DumpArgs): string[] {
  if (!Number.isInteger(o.pid) || o.pid <= 0) throw new RangeError(`invalid pid ${o.pid}`);
  const a = ['dump', '-t', String(o.pid), '-D', o.imagesDir, '-o', o.logFile, `-v${checkLevel(o.logLevel)}`];
  a.push(...taskFlags(o));
  if (o.linkRemap) a.push('--link-remap');
  if (o.after === 'leave-running') a.push('--leave-running');
  else if (o.after === 'leave-stopped') a.push('--leave-stopped');
  if (o.pageServer && o.lazyPages) throw new RangeError('a dump streams its pages (pageServer) or serves them after the freeze (lazyPages), not both');
  if (o.lazyPages) a.push('--lazy-pages', '--ps-socket', String(o.lazyPages.psSocketFd));
  if (o.statusFd !== undefined) a.push('--status-fd', String(o.statusFd));
  if (o.pageServer) {
    a.push('--page-server');
    if ('psSocketFd' in o.pageServer) a.push('--ps-socket', String(o.pageServer.psSocketFd));
    else a.push('--address', o.pageServer.address, '--port', String(o.pageServer.port));
  }
  if (o.freezeTimeoutSec !== undefined) a.push('--timeout', String(Math.max(1, Math.floor(o.freezeTimeoutSec))));
  if (o.extraArgs) a.push(...o.extraArgs);
  return a;
}

export interface RestoreArgs extends CriuTaskOptions {
  imagesDir: string;
  logFile: string;
  logLevel: number;
  /** Absolute path CRIU writes the restored root's pid to. */
  pidFile: string;
  /** Post-copy: the task runs before its memory is in place; a `criu lazy-pages` daemon fills it (buildLazyPagesArgs). */
  lazyPages?: boolean;
  extraArgs?: readonly string[];
}

/** `criu restore --restore-detached`: CRIU exits once the tree runs, reparented away from it. */
export function buildRestoreArgs(o: RestoreArgs): string[] {
  if (!o.pidFile.startsWith('/')) throw new RangeError(`pid file must be an absolute path, got ${o.pidFile}`);
  const a = ['restore', '-D', o.imagesDir, '-o', o.logFile, `-v${checkLevel(o.logLevel)}`, '--restore-detached'];
  a.push('--pidfile', o.pidFile);
  if (o.lazyPages) a.push('--lazy-pages');
  a.push(...taskFlags(o));
  if (o.extraArgs) a.push(...o.extraArgs);
  return a;
}

/**
 * `criu lazy-pages`: the daemon a `criu restore --lazy-pages` hands the restored memory's userfaultfd to. It serves
 * page faults from the image in `imagesDir` — or, with `fromSource`, from the source's `criu dump --lazy-pages` over
 * that inherited socket — and pushes the remaining pages in the background; it exits (0) once every page is in
 * place. Start it before the restore: the restore connects to its socket in the images directory.
 */
export function buildLazyPagesArgs(o: { imagesDir: string; logFile: string; logLevel: number; statusFd?: number; fromSource?: { psSocketFd: number } }): string[] {
  const a = ['lazy-pages', '-D', o.imagesDir, '-o', o.logFile, `-v${checkLevel(o.logLevel)}`];
  if (o.fromSource) a.push('--page-server', '--ps-socket', String(o.fromSource.psSocketFd));
  // CRIU writes one byte to the status fd (and closes it) once its socket listens: no polling for the socket.
  if (o.statusFd !== undefined) a.push('--status-fd', String(o.statusFd));
  return a;
}

export interface PageServerArgs {
  imagesDir: string;
  logFile: string;
  logLevel: number;
  /** Serve over an inherited, already connected socket fd, or listen on an address. */
  on: { psSocketFd: number } | { address: string; port: number };
}

/** `criu page-server`: receives memory pages from a `criu dump --page-server` and writes them as images. */
export function buildPageServerArgs(o: PageServerArgs): string[] {
  const a = ['page-server', '-D', o.imagesDir, '-o', o.logFile, `-v${checkLevel(o.logLevel)}`];
  if ('psSocketFd' in o.on) a.push('--ps-socket', String(o.on.psSocketFd));
  else a.push('--address', o.on.address, '--port', String(o.on.port));
  return a;
}
