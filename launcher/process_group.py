"""Signal, reap and wait out a whole process group, so no engine grandchild outlives a launch.

The engine runs as the leader of its own session, so its process group id is its pid and
every worker it forks (schedulers, tokenizer managers, TP ranks) shares that group unless
it deliberately leaves. A group counts as gone only once its last member is reaped: zombies
still answer `killpg(pgid, 0)`, and a container's init does not always reap orphans, so the
supervising process makes itself a child subreaper and reaps the group's orphans itself.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_POLL_S = 0.02


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
