"""Signal, reap and wait out a whole process group, so no engine grandchild outlives a launch.

The engine runs as the leader of its own session, so its process group id is its pid and
every worker it forks (schedulers, tokenizer managers, TP ranks) shares that group unless
it deliberately leaves. A group counts as gone only once its last member is reaped: zombies
still answer `killpg(pgid, 0)`, and a container's init does not always reap orphans, so the
supervising process makes itself a child subreaper and reaps the group's orphans itself.

A launcher killed with SIGKILL cannot clean up, so on Linux the engine is also tied to it with
PR_SET_PDEATHSIG: the kernel sends the engine SIGTERM when the launcher dies.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.02

# Runs in the engine's process between fork and exec, then execs the engine (same pid).
# PR_SET_PDEATHSIG has to be set in the child, and Popen(preexec_fn=...) would run Python code
# in a forked copy of a multi-threaded launcher (log reader, watchdog, the CLI's status
# spinner), where a lock another thread held at fork time can deadlock it before exec; a fresh
# interpreter has no such locks. (start_new_session is safe: _posixsubprocess calls setsid()
# in C.) The setting survives an exec that is not set-user-ID. It reaches the engine's main
# process only, not the workers it forks into the group (SGLang's scheduler and detokenizer,
# vLLM's engine core): stopping those on SIGTERM is the engine's job, which SGLang and vLLM do
# (`qwen35 serve` forks none). Nothing follows up with SIGKILL once the launcher is gone.
# Protocol: argv is STATUS_FD LAUNCHER_PID PROGRAM ARGS...; STATUS_FD is close-on-exec, so the
# launcher reads EOF once the engine's exec succeeded, or the errno of a failed one.
_DIE_WITH_LAUNCHER = """\
import os, sys
status_fd, launcher_pid, *argv = sys.argv[1:]
status_fd = int(status_fd)
os.set_inheritable(status_fd, False)
try:
    import ctypes
    ctypes.CDLL(None).prctl(%d, %d, 0, 0, 0)
except (ImportError, OSError, AttributeError):
    pass  # a Python without ctypes: run untied, as on other systems
if os.getppid() != int(launcher_pid):
    sys.exit(1)  # the launcher died before the setting took hold: nobody would stop us
try:
    os.execvp(argv[0], argv)
except OSError as error:
    os.write(status_fd, str(error.errno).encode())
    sys.exit(127)
""" % (_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_session_leader(argv: Sequence[str], **popen_args) -> subprocess.Popen:
    """Popen `argv` as the leader of a new session; on Linux, from the main thread, it gets SIGTERM if we die."""
    # The kernel sends the signal when the *thread* that forked exits, not the process: from
    # any thread but the main one, a finished worker thread would stop a healthy engine.
    tie = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    if not tie:
        return subprocess.Popen(list(argv), start_new_session=True, **popen_args)
    status_read, status_write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _DIE_WITH_LAUNCHER, str(status_write), str(os.getpid()), *argv],
            start_new_session=True, pass_fds=(status_write,), **popen_args,
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    with os.fdopen(status_read, "rb") as status:
        report = status.read()  # EOF at the engine's exec, or when the trampoline dies
    if report:
        process.communicate()  # reap it and close its pipes
        code = int(report)
        raise OSError(code, os.strerror(code), argv[0])
    return process


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux); return whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to every process of the group; return False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member we may not signal (it changed credentials) still keeps the group alive.
        return True
    return True


def reap_group(pgid: int) -> None:
    """Collect the exit status of every exited member of the group that is our child."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_alive(pgid: int, leader: subprocess.Popen | None = None) -> bool:
    """Whether any process of the group still exists, after reaping what has exited."""
    # The leader is reaped through Popen first: reaping it with waitpid(-pgid) would leave
    # Popen to find no child and report a made-up exit status of 0.
    if leader is not None and leader.poll() is None:
        return True
    reap_group(pgid)
    return signal_group(pgid, 0)


def wait_group_gone(pgid: int, timeout_s: float, leader: subprocess.Popen | None = None) -> bool:
    """Poll until the group is gone or `timeout_s` passes; return whether it is gone."""
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid, leader):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def terminate_group(
    pgid: int,
    grace_s: float,
    leader: subprocess.Popen | None = None,
    kill_wait_s: float = 5.0,
) -> bool:
    """SIGTERM the group, SIGKILL it after `grace_s`; return whether every member is gone."""
    if not group_alive(pgid, leader):
        return True
    signal_group(pgid, signal.SIGTERM)
    if wait_group_gone(pgid, grace_s, leader):
        return True
    signal_group(pgid, signal.SIGKILL)
    return wait_group_gone(pgid, kill_wait_s, leader)
