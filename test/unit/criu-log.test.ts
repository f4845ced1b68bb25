import { describe, expect, it } from 'vitest';
import { classifyCriuFailure, describeCriuFailure, meaningfulErrors, parseCriuLog, parseDumpStats, parseRestoreStats } from '../../src/engines/criu/criu-log.js';

// Excerpts of real CRIU 4.x logs from this project's runs.
const NO_SUCH_PID = `(00.025829) Warn  (criu/seize.c:63): Failed to open /proc/999999/comm: No such file or directory
(00.025837) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.026261) Warn  (compel/src/lib/infect.c:133): Unable to interrupt task: 999999 (No such process)
(00.026276) Error (compel/src/lib/infect.c:418): Unable to detach from 999999: No such process
(00.026281) Error (criu/cr-dump.c:2111): Dumping FAILED.`;

const TCP_42 = `(00.040533) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.047739) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(00.047752) Error (criu/cr-dump.c:1545): Dump files (pid: 9052) failed with -1
(00.048353) Error (criu/cr-dump.c:1975): Dumping FAILED.`;

const TCP_41_NEW_KERNEL = `(00.051985) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: Operation not supported
(00.051987) Error (criu/sockets.c:628): sockets: Can't get 1:34 opt: Operation not supported
(00.052003) Error (criu/cr-dump.c:1681): Dump files (pid: 7953) failed with -1
(00.062651) Error (criu/cr-dump.c:2111): Dumping FAILED.`;

const PID_TAKEN = `(00.027063) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.027631) Error (criu/cr-restore.c:1237): Can't fork for 12697: File exists
(00.027649) Error (criu/cr-restore.c:2331): Restoring FAILED.`;

const EMPTY_IMAGE = `(00.041491) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.041510) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)`;

describe('CRIU log parsing', () => {
  it('reads error and warning lines with their source location', () => {
    const e = parseCriuLog(NO_SUCH_PID);
    expect(e).toHaveLength(5);
    expect(e[0]).toEqual({ level: 'warn', where: 'criu/seize.c:63', message: 'Failed to open /proc/999999/comm: No such file or directory' });
    expect(e[3]).toEqual({ level: 'error', where: 'compel/src/lib/infect.c:418', message: 'Unable to detach from 999999: No such process' });
  });

  it('drops the noise: the RLIMIT complaint in containers and the generic summaries', () => {
    expect(meaningfulErrors(parseCriuLog(TCP_42)).map((e) => e.message)).toEqual(['inet: Connected TCP socket, consider using --tcp-established option.']);
  });
});

describe('CRIU failure classification', () => {
  it('a vanished task', () => {
    const f = classifyCriuFailure('dump', NO_SUCH_PID, '', 1);
    expect([f.code, f.status]).toEqual(['TASK_NOT_FOUND', 'fatal']);
  });

  it('an established TCP connection without --tcp-established', () => {
    const f = classifyCriuFailure('dump', TCP_42, '', 1);
    expect([f.code, f.status]).toEqual(['TASK_UNSUPPORTED', 'fatal']);
    expect(describeCriuFailure('dump', f, '/img/dump.log')).toBe(
      'criu dump failed: inet: Connected TCP socket, consider using --tcp-established option. — the task has established TCP connections; enable tcpEstablished only where its address moves with it, or close them first (log: /img/dump.log)',
    );
  });

  it('CRIU 4.1 on Linux 6.16+ cannot dump inet sockets: says to install 4.2', () => {
    const f = classifyCriuFailure('dump', TCP_41_NEW_KERNEL, '', 1);
    expect(f.code).toBe('ENGINE_UNAVAILABLE');
    expect(f.hint).toMatch(/4\.2/);
  });

  it('a pid taken on the target is a conflict worth retrying elsewhere', () => {
    const f = classifyCriuFailure('restore', PID_TAKEN, '', 1);
    expect([f.code, f.status, f.reason]).toEqual(['RESTORE_CONFLICT', 'retryable', "Can't fork for 12697: File exists"]);
  });

  it('an empty or truncated image is invalid', () => {
    expect(classifyCriuFailure('restore', EMPTY_IMAGE, '', 1).code).toBe('IMAGE_INVALID');
  });

  it('an option CRIU does not know, from stderr (there is no log then)', () => {
    const f = classifyCriuFailure('dump', '', "/x/.criu/usr/sbin/criu: unrecognized option '--no-such-opt'\n\nUsage:\n  criu dump|pre-dump -t PID [<options>]\n", 1);
    expect([f.code, f.status]).toEqual(['INVALID_REQUEST', 'fatal']);
    expect(f.reason).toContain("unrecognized option '--no-such-opt'");
  });

  it('anything else: the first meaningful error, retryable', () => {
    const f = classifyCriuFailure('dump', '(00.1) Error (criu/x.c:1): something odd\n(00.2) Error (criu/cr-dump.c:2111): Dumping FAILED.', '', 1);
    expect([f.code, f.status, f.reason]).toEqual(['CHECKPOINT_FAILED', 'retryable', 'something odd']);
    expect(classifyCriuFailure('restore', '', '', 137).reason).toBe('criu exited with code 137');
  });
});

describe('CRIU stats images', () => {
  it('reads dump statistics (stats-dump of a 64 MiB toy task)', () => {
    const img = Buffer.from('4059105506330957290000000a2708920410adce0518feef0320a8840328c19301300038ee92014000480050085808600068007000', 'hex');
    expect(parseDumpStats(img)).toEqual({ freezingTimeUs: 530, frozenTimeUs: 91949, memdumpTimeUs: 63486, memwriteTimeUs: 49704, pagesScanned: 18881, pagesWritten: 18798 });
  });

  it('reads restore statistics', () => {
    const img = Buffer.from('405910550633095710000000120e08001000180020e69002289b9301', 'hex');
    expect(parseRestoreStats(img)).toEqual({ forkingTimeUs: 0, restoreTimeUs: 34918, pagesRestored: 18843 });
  });

  it('tolerates missing or truncated images', () => {
    expect(parseDumpStats(Buffer.alloc(0))).toBeUndefined();
    expect(parseDumpStats(Buffer.from('4059105506330957290000000a27', 'hex'))).toBeUndefined();
    expect(parseRestoreStats(Buffer.from('4059105506330957290000000a2708920410adce0518feef0320a8840328c19301300038ee92014000480050085808600068007000', 'hex'))).toBeUndefined();
  });
});
