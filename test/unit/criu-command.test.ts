import { describe, expect, it } from 'vitest';
import { buildDumpArgs, buildLazyPagesArgs, buildPageServerArgs, buildRestoreArgs } from '../../src/engines/criu/criu-command.js';
import type { CriuTaskOptions } from '../../src/engines/criu/criu-command.js';
import { parseCriuVersion } from '../../src/engines/criu/criu-binary.js';

const task: CriuTaskOptions = { shellJob: false, tcpEstablished: false, extUnixSk: true, fileLocks: true, manageCgroups: 'ignore', networkLock: 'nftables' };

describe('criu dump command', () => {
  it('dumps the whole tree with the options an inference server needs, leaving it stopped for the hand-over', () => {
    expect(
      buildDumpArgs({ ...task, pid: 42, imagesDir: '/img', logFile: 'dump.log', logLevel: 4, linkRemap: true, after: 'leave-stopped' }),
    ).toEqual(['dump', '-t', '42', '-D', '/img', '-o', 'dump.log', '-v4', '--ext-unix-sk', '--file-locks', '--manage-cgroups=ignore', '--link-remap', '--leave-stopped']);
  });

  it('adds --shell-job, --tcp-established with a network lock, --leave-running and the freeze timeout when asked', () => {
    const a = buildDumpArgs({
      ...task,
      shellJob: true,
      tcpEstablished: true,
      pid: 7,
      imagesDir: '/i',
      logFile: 'd.log',
      logLevel: 2,
      linkRemap: false,
      after: 'leave-running',
      freezeTimeoutSec: 3.7,
    });
    expect(a).toContain('--shell-job');
    expect(a.join(' ')).toContain('--tcp-established --network-lock nftables');
    expect(a).toContain('--leave-running');
    expect(a).not.toContain('--link-remap');
    expect(a.join(' ')).toContain('--timeout 3');
  });

  it('kill mode passes neither leave flag (CRIU kills the tree itself)', () => {
    const a = buildDumpArgs({ ...task, pid: 7, imagesDir: '/i', logFile: 'd.log', logLevel: 4, linkRemap: true, after: 'kill' });
    expect(a).not.toContain('--leave-running');
    expect(a).not.toContain('--leave-stopped');
  });

  it('sends pages to a page server over an inherited socket or an address', () => {
    const base = { ...task, pid: 7, imagesDir: '/i', logFile: 'd.log', logLevel: 4, linkRemap: true, after: 'kill' as const };
    expect(buildDumpArgs({ ...base, pageServer: { psSocketFd: 3 } }).join(' ')).toContain('--page-server --ps-socket 3');
    expect(buildDumpArgs({ ...base, pageServer: { address: '10.0.0.2', port: 2707 } }).join(' ')).toContain('--page-server --address 10.0.0.2 --port 2707');
  });

  it('rejects a bad pid or log level', () => {
    const base = { ...task, imagesDir: '/i', logFile: 'd.log', linkRemap: true, after: 'kill' as const };
    expect(() => buildDumpArgs({ ...base, pid: 0, logLevel: 4 })).toThrow(/pid/);
    expect(() => buildDumpArgs({ ...base, pid: 1.5, logLevel: 4 })).toThrow(/pid/);
    expect(() => buildDumpArgs({ ...base, pid: 5, logLevel: 9 })).toThrow(/log level/);
  });
});

describe('criu restore and page-server commands', () => {
  it('restores detached with a pid file and the options the dump used', () => {
    expect(buildRestoreArgs({ ...task, shellJob: true, imagesDir: '/img', logFile: 'restore.log', logLevel: 4, pidFile: '/img/restore.pid' })).toEqual([
      'restore', '-D', '/img', '-o', 'restore.log', '-v4', '--restore-detached', '--pidfile', '/img/restore.pid',
      '--shell-job', '--ext-unix-sk', '--file-locks', '--manage-cgroups=ignore',
    ]);
  });

  it('wants an absolute pid file (CRIU resolves relative ones against its work dir)', () => {
    expect(() => buildRestoreArgs({ ...task, imagesDir: '/img', logFile: 'r.log', logLevel: 4, pidFile: 'restore.pid' })).toThrow(/absolute/);
  });

  it('runs a page server on an inherited socket or a listening address', () => {
    expect(buildPageServerArgs({ imagesDir: '/t', logFile: 'page-server.log', logLevel: 4, on: { psSocketFd: 3 } })).toEqual([
      'page-server', '-D', '/t', '-o', 'page-server.log', '-v4', '--ps-socket', '3',
    ]);
    expect(buildPageServerArgs({ imagesDir: '/t', logFile: 'p.log', logLevel: 1, on: { address: '0.0.0.0', port: 1 } }).slice(-4)).toEqual(['--address', '0.0.0.0', '--port', '1']);
  });
});

describe('post-copy commands', () => {
  it('a post-copy dump serves the memory on an inherited socket after the freeze and says when it is ready', () => {
    const a = buildDumpArgs({ ...task, pid: 42, imagesDir: '/img', logFile: 'dump.log', logLevel: 4, linkRemap: true, after: 'leave-stopped', lazyPages: { psSocketFd: 0 }, statusFd: 3 });
    expect(a).toEqual(expect.arrayContaining(['--lazy-pages', '--ps-socket', '0', '--status-fd', '3', '--leave-stopped']));
    expect(a).not.toContain('--page-server');
  });

  it('a dump streams its pages or serves them afterwards, not both', () => {
    expect(() =>
      buildDumpArgs({ ...task, pid: 42, imagesDir: '/img', logFile: 'dump.log', logLevel: 4, linkRemap: true, after: 'kill', lazyPages: { psSocketFd: 0 }, pageServer: { psSocketFd: 3 } }),
    ).toThrow(/not both/);
  });

  it('the lazy-pages daemon reads the image here, or pulls the memory from the source over an inherited socket', () => {
    expect(buildLazyPagesArgs({ imagesDir: '/t', logFile: 'lazy-pages.log', logLevel: 4, statusFd: 3 })).toEqual(['lazy-pages', '-D', '/t', '-o', 'lazy-pages.log', '-v4', '--status-fd', '3']);
    expect(buildLazyPagesArgs({ imagesDir: '/t', logFile: 'l.log', logLevel: 2, fromSource: { psSocketFd: 0 } })).toEqual(['lazy-pages', '-D', '/t', '-o', 'l.log', '-v2', '--page-server', '--ps-socket', '0']);
  });
});

describe('criu --version', () => {
  it('parses release and git builds', () => {
    expect(parseCriuVersion('Version: 4.1.1\n')).toEqual({ version: '4.1.1', major: 4, minor: 1 });
    expect(parseCriuVersion('Version: 4.2\nGitID: v4.2-12-gabc\n')).toEqual({ version: '4.2', major: 4, minor: 2 });
    expect(parseCriuVersion('Version: 3.17.1\n')?.major).toBe(3);
    expect(parseCriuVersion('criu: command not found')).toBeUndefined();
  });
});
