"""Runs a command as a child subreaper and reaps every orphan at once, then exits with the command's status.

Why: on one machine the "target node" restores the task under the pids it had on the "source node", and a pid is
free only once its zombie is reaped. `spotwatch run` starts tasks detached, so a killed source task is a zombie of
whoever adopts orphans — on the sandboxed GPU machines that is a PID 1 which reaps about a second and a half
later, time the target then spends waiting (it appeared as unattributed target-side time). Real nodes do not share
pids, and an init such as systemd or a container shim reaps at once; this wrapper gives the bench the same.

    python3 subreaper.py COMMAND [ARG...]
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: subreaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"subreaper: prctl failed (errno {ctypes.get_errno()}); running without", file=sys.stderr)
    pid = os.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    # Pass the usual stop signals on to the command.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda n, _f: os.kill(pid, n))
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if done == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
