"""The launcher as a process of its own, under signals: what reaches it is forwarded to the engine,
and a launcher killed outright takes the engine with it. A small driver script runs `run_engine`
as `qwen35 launch` does, with tests/launcher/fake_engine.py playing the engine.
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qwen35.launcher import process_group
from process_checks import assert_gone

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")

DRIVER = textwrap.dedent(
    """
    import os
    import signal
    import sys
    import threading
    from pathlib import Path
    from qwen35.launcher.supervise import EngineCallbacks, EngineProcess, run_engine

    # A terminal session's default, or what nohup leaves behind, whatever the test runner had.
    signal.signal(signal.SIGHUP, signal.SIG_IGN if os.environ.get("DRIVER_NOHUP") else signal.SIG_DFL)
    port, log_path, *engine_args = sys.argv[1:]
    spec = EngineProcess(
        argv=[sys.executable, {engine!r}, "--port", port, *engine_args],
        log_path=Path(log_path), log_prefix="[fake] ", base_url=f"http://127.0.0.1:{{port}}",
        ready_timeout_s=10, poll_interval_s=0.05, stop_grace_s=float(os.environ.get("DRIVER_GRACE_S", "2")),
        stop_repeat_window_s=float(os.environ.get("DRIVER_REPEAT_WINDOW_S", "2")),
    )
    lock = threading.Lock()  # on_line runs on the log reader thread

    def say(text):
        with lock:
            sys.stdout.write(text + "\\n")
            sys.stdout.flush()

    callbacks = EngineCallbacks(on_line=say, on_ready=lambda models: say(f"driver: ready {{models}}"))
    sys.exit(run_engine(spec, callbacks))
    """
).format(engine=str(FAKE_ENGINE))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_driver(tmp_path: Path, *engine_args: str, nohup: bool = False,
               **settings: str) -> tuple[subprocess.Popen, queue.Queue]:
    env = {**os.environ, **({"DRIVER_NOHUP": "1"} if nohup else {}),
           **{f"DRIVER_{name.upper()}": value for name, value in settings.items()}}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(free_port()), str(tmp_path / "engine.log"), *engine_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in driver.stdout], daemon=True).start()
    return driver, lines


def stop_driver(driver: subprocess.Popen, pgid: int | None) -> None:
    """After a failed test: a SIGKILLed driver cannot clean up, so kill its engine group too."""
    driver.kill()
    driver.wait()
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def read_until(lines: queue.Queue, pattern: str, timeout_s: float = 10.0) -> re.Match:
    deadline = time.monotonic() + timeout_s
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r}; driver said:\n" + "".join(seen))
        seen.append(line)
        if match := re.search(pattern, line):
            return match


def is_dead(pid: int) -> bool:
    """Whether `pid` has exited: reaped (by us, as its subreaper, or by init) or a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda signum: signum.name)
def test_signal_to_the_launcher_while_serving_shuts_down_cleanly(tmp_path, signum):
    driver, lines = run_driver(tmp_path, "--spawn-child")
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))
        child = int(read_until(lines, r"child pid=(\d+)").group(1))
        read_until(lines, r"driver: ready \['fake-model'\]")
        driver.send_signal(signum)
        assert driver.wait(timeout=10) == 0
        # A hang-up reaches the engine as SIGTERM, the signal engines shut down cleanly on.
        forwarded = signal.SIGTERM if signum == signal.SIGHUP else signum
        read_until(lines, rf"received {forwarded.name}, shutting down", timeout_s=1)
        assert_gone(pgid, child)
    finally:
        stop_driver(driver, pgid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda signum: signum.name)
def test_stop_signal_during_startup_stops_the_engine(tmp_path, signum):
    driver, lines = run_driver(tmp_path, "--ready-after-s", "30", "--spawn-child")
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))
        child = int(read_until(lines, r"child pid=(\d+)").group(1))
        read_until(lines, r"listening on")
        driver.send_signal(signum)
        assert driver.wait(timeout=10) == 0
        assert_gone(pgid, child)
    finally:
        stop_driver(driver, pgid)


def test_hangup_leaves_a_launcher_started_under_nohup_serving(tmp_path):
    driver, lines = run_driver(tmp_path, nohup=True)
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))
        read_until(lines, r"driver: ready \['fake-model'\]")
        # An ignored SIGHUP is dropped when sent; a handled one would be acted on before the
        # SIGINT (lower signals first) and reach the engine as SIGTERM. So the engine's first
        # signal tells which happened, with no waiting.
        driver.send_signal(signal.SIGHUP)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=10) == 0
        read_until(lines, r"received SIGINT, shutting down", timeout_s=1)
        assert_gone(pgid)
    finally:
        stop_driver(driver, pgid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_engine_stops_when_the_launcher_is_killed_outright(tmp_path):
    # Orphans of the killed launcher come to this process, which reaps them in is_dead.
    process_group.become_subreaper()
    driver, lines = run_driver(tmp_path, "--spawn-child", "--stop-child-on-exit")
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))  # the engine's pid too
        child = int(read_until(lines, r"child pid=(\d+)").group(1))
        read_until(lines, r"driver: ready \['fake-model'\]")
        driver.kill()
        driver.wait()
        # The kernel SIGTERMs the engine, which stops its own worker on the way out.
        assert wait_for(lambda: is_dead(pgid) and is_dead(child), timeout_s=10), "engine outlived its launcher"
    finally:
        stop_driver(driver, pgid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name)
def test_the_same_stop_delivered_twice_is_one_clean_stop(tmp_path, signum):
    # What a kill of make's process group does (the launcher hears it, then make passes it on),
    # and a double Ctrl-C: the engine still shuts down on its own, and the exit code says so.
    driver, lines = run_driver(tmp_path, "--spawn-child", "--stop-child-on-exit", "--shutdown-s", "0.5")
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))
        read_until(lines, r"driver: ready \['fake-model'\]")
        driver.send_signal(signum)
        driver.send_signal(signum)
        assert driver.wait(timeout=10) == 0
        read_until(lines, r"fake-engine: bye after \d stop signal", timeout_s=1)
        assert_gone(pgid)
    finally:
        stop_driver(driver, pgid)


def test_a_stop_repeated_after_the_window_kills_without_waiting_out_the_grace(tmp_path):
    driver, lines = run_driver(tmp_path, "--shutdown-s", "60", repeat_window_s="0.2", grace_s="30")
    pgid = None
    try:
        pgid = int(read_until(lines, r"pgid=(\d+)").group(1))
        read_until(lines, r"driver: ready \['fake-model'\]")
        sent = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        read_until(lines, r"received SIGTERM, shutting down")
        assert wait_for(lambda: time.monotonic() - sent > 0.3, timeout_s=1)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=20) == 128 + signal.SIGKILL
        assert time.monotonic() - sent < 15  # well inside the 30 s grace
        assert_gone(pgid)
    finally:
        stop_driver(driver, pgid)
