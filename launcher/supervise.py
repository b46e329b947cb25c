"""Start an inference engine as a child process, wait until it serves, and shut it down cleanly.

Life of a launch: `start()` spawns the engine as the leader of a new session (so its whole
process tree can be signalled as one group) with stdout and stderr merged into a pipe that a
reader thread copies to the log file and to `on_line`; `wait_ready()` polls the HTTP API;
`wait()` serves until the engine exits, forwarding SIGINT/SIGTERM/SIGHUP to the group (a stop
repeated within `stop_repeat_window_s` is the same stop); `exit_problem()` then says in one line
what happened to an engine we did not stop cleanly; `stop()` and the context manager's exit make
sure no process of the group survives. A log file that cannot be written (full disk) costs a
warning, never the supervision: the output keeps being drained and shown. A launcher that
is killed outright (SIGKILL, OOM killer) takes the engine with it through PR_SET_PDEATHSIG
(Linux; see `process_group.start_session_leader`).
"""
from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from qwen35.launcher import preflight, process_group
from qwen35.launcher.readiness import PHASE_ENDPOINTS, ReadinessProbe
from qwen35.planner.errors import InputError, Qwen35Error

_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PROBE_TIMEOUT_S = 5.0
_READER_JOIN_S = 2.0


@dataclass(frozen=True, kw_only=True)
class EngineProcess:
    """How to run one engine: command, environment, log file and where it will answer."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # merged over os.environ
    cwd: Path | None = None
    log_path: Path
    log_prefix: str = ""  # put before each line handed to on_line, e.g. "[sglang] "
    base_url: str  # http://host:port, reachable from this machine
    api_key: str | None = None  # sent as a Bearer token on readiness probes
    ready_timeout_s: float = 1800.0
    poll_interval_s: float = 1.0
    stop_grace_s: float = 30.0  # between SIGTERM and SIGKILL
    # A stop that arrives again within this window is the same stop: a kill of make's process
    # group reaches the launcher directly and once more through make, and a double Ctrl-C is
    # one request. Only a stop repeated after it (someone insisting) kills at once.
    stop_repeat_window_s: float = 2.0
    tail_lines: int = 40  # log lines kept for error reports
    # A ready answer from a port no process of the engine's group listens on is refused; an
    # engine run through a container (its port held by the runtime's proxy) only gets a warning.
    foreign_listener_fatal: bool = True


@dataclass
class EngineCallbacks:
    """Hooks the CLI renders from; `on_line` is called from the log reader thread."""

    on_line: Callable[[str], None] | None = None
    on_tick: Callable[[float, str], None] | None = None  # (elapsed_s, readiness phase)
    on_ready: Callable[[list[str]], None] | None = None  # served model ids
    on_warning: Callable[[str], None] | None = None  # one line; from the log reader thread too


class EngineCrashed(Qwen35Error):
    """The engine exited before it became ready."""

    def __init__(self, returncode: int, last_lines: list[str], log_path: Path):
        if returncode < 0:
            message = f"engine was killed by {_signal_name(-returncode)} during start-up"
        else:
            message = f"engine exited with code {returncode} during start-up"
        last = next((line.strip() for line in reversed(last_lines) if line.strip()), "")
        if last:
            message += f": {last[:200]}"
        super().__init__(message, f"see the full log at {log_path}")
        self.returncode = returncode
        self.last_lines = last_lines
        self.log_path = log_path


class ReadinessTimeout(Qwen35Error):
    """The engine did not become ready within its time limit."""

    def __init__(self, timeout_s: float, phase: str, last_lines: list[str], log_path: Path):
        super().__init__(
            f"engine not ready after {timeout_s:g} s (still waiting on {PHASE_ENDPOINTS[phase]})",
            f"see the full log at {log_path}; large models can need a longer readiness timeout",
        )
        self.timeout_s = timeout_s
        self.phase = phase
        self.last_lines = last_lines
        self.log_path = log_path


class PortAnsweredByAnother(InputError):
    """The readiness probe was answered by a process that is not the engine we started."""

    def __init__(self, port: int, holder: str, last_lines: list[str], log_path: Path):
        super().__init__(f"port {port} is answered by {holder}, not by the engine this launch started",
                         f"stop that process or launch on another --port; engine log: {log_path}")
        self.last_lines = last_lines
        self.log_path = log_path


def answered_by_group(port: int, pgid: int) -> str | None:
    """None when a process of group `pgid` listens on `port` (or this system cannot tell); else who does."""
    inodes = preflight.listening_sockets(port)
    if not inodes:
        return None  # no /proc/net/tcp, or the port is reached through another network namespace
    holders = preflight.socket_holders(inodes)
    for pid in holders:
        with contextlib.suppress(OSError):
            if pgid in (os.getpgid(pid), os.getsid(pid)):
                return None
    # Listening sockets whose holder we cannot see belong to another user: not our engine either.
    return preflight.describe_process(holders[0]) if holders else "a process of another user"


class ApiKeyRejected(InputError):
    """The engine answered a readiness probe with 401/403: it expects another API key."""

    def __init__(self, status: int, phase: str, key_sent: bool, last_lines: list[str], log_path: Path):
        answered = f"GET {PHASE_ENDPOINTS[phase]} answered {status}"
        if key_sent:
            message = f"the engine rejected the API key the launcher sent ({answered})"
            hint = ("launch passes the key it sends (the value of the variable serving.api_key_env names) "
                    "to the engine (as QWEN35_API_KEY or VLLM_API_KEY in its environment, in a --config file "
                    "to SGLang), so the engine got another one: check that QWEN35_ENGINE_EXECUTABLE, if set, "
                    "passes those through unchanged")
        else:
            message = f"the engine requires an API key and the launcher sent none ({answered})"
            hint = ("the engine likely read one from its environment (QWEN35_API_KEY for qwen35 serve, "
                    "VLLM_API_KEY for vllm): name that variable in the profile's serving.api_key_env "
                    "so launch sends the same key, or unset it to serve without a key")
        super().__init__(message, f"{hint}; engine log: {log_path}")
        self.status = status
        self.phase = phase
        self.last_lines = last_lines
        self.log_path = log_path


def exit_status(returncode: int, stop_signal: int | None) -> int:
    """Our exit code for an engine exit: 0 after a requested stop, 128+N for death by signal N."""
    if stop_signal is not None and returncode in (0, -stop_signal, 128 + stop_signal):
        return 0
    return 128 - returncode if returncode < 0 else returncode


def run_engine(spec: EngineProcess, callbacks: EngineCallbacks | None = None) -> int:
    """Start the engine, wait until it is ready, serve until it exits; return the exit code."""
    callbacks = callbacks or EngineCallbacks()
    with Supervisor(spec, callbacks) as supervisor, supervisor.forwarding_signals():
        supervisor.start()
        models = supervisor.wait_ready()
        if models is not None and callbacks.on_ready:
            callbacks.on_ready(models)
        return supervisor.wait()


class Supervisor:
    """Owns one engine process group from `start()` until every member is gone."""

    def __init__(self, spec: EngineProcess, callbacks: EngineCallbacks | None = None):
        self.spec = spec
        self.callbacks = callbacks or EngineCallbacks()
        self.process: subprocess.Popen | None = None
        self.stop_signal: int | None = None  # the first stop we asked for, if any
        self.killed: bool = False  # we SIGKILLed the group: a repeated stop, or the grace ran out
        self._stop_requested_at = 0.0
        self._tail: deque[str] = deque(maxlen=spec.tail_lines)
        self._tail_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._wake_fd: int | None = None  # write end of the watchdog's pipe
        self._forwarding = False

    @property
    def pgid(self) -> int:
        """The engine's process group id (its pid, as a session leader)."""
        if self.process is None:
            raise RuntimeError("engine not started")
        return self.process.pid

    def last_lines(self) -> list[str]:
        """The most recent engine log lines, oldest first."""
        with self._tail_lock:
            return list(self._tail)

    def start(self) -> None:
        """Spawn the engine in its own session; started from the main thread, it dies with this process (Linux)."""
        if self.process is not None:
            raise RuntimeError("engine already started")
        spec = self.spec
        log_file = self._open_log(f"# qwen35: {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(_redacted(spec.argv))}")
        # Python engines block-buffer a piped stdout; unbuffered keeps the live view live.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        process_group.become_subreaper()
        try:
            self.process = process_group.start_session_leader(
                spec.argv,
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as error:
            if log_file is not None:
                log_file.close()
            raise Qwen35Error(
                f"cannot start the engine ({spec.argv[0]}): {error.strerror or error}",
                "check that the engine is installed in this environment",
            ) from error
        self._reader = threading.Thread(
            target=self._copy_output, args=(self.process.stdout, log_file),
            name="engine-log", daemon=True,
        )
        self._reader.start()
        wake_read, self._wake_fd = os.pipe()
        self._watchdog = threading.Thread(
            target=self._kill_after_grace, args=(wake_read,), name="engine-stop", daemon=True
        )
        self._watchdog.start()
        if self.stop_signal is not None:  # a stop arrived while we were spawning
            self._deliver(self.stop_signal)

    def wait_ready(self) -> list[str] | None:
        """Block until the engine serves; its model ids, or None if a stop was requested."""
        process, spec = self._started(), self.spec
        probe = ReadinessProbe(spec.base_url, spec.api_key)
        started = time.monotonic()
        deadline = started + spec.ready_timeout_s
        while True:
            if self.stop_signal is not None:
                return None
            returncode = process.poll()
            if returncode is not None:
                self._cleanup(grace_s=min(spec.stop_grace_s, 5.0))
                raise EngineCrashed(returncode, self.last_lines(), spec.log_path)
            remaining = deadline - time.monotonic()
            models = probe.poll(timeout_s=max(0.1, min(_PROBE_TIMEOUT_S, remaining)))
            if models is not None:
                # An answer proves only that something serves the port: another server that took
                # it after the preflight would answer too, while our engine loads or fails to bind.
                port = urlsplit(spec.base_url).port
                holder = answered_by_group(port, self.pgid)
                if holder is None:
                    return models
                if not spec.foreign_listener_fatal:
                    if self.callbacks.on_warning:
                        self.callbacks.on_warning(f"port {port} is served by {holder}, not by a process the launcher "
                                                  "started (expected when the engine runs in a container)")
                    return models
                self._cleanup(grace_s=min(spec.stop_grace_s, 5.0))
                raise PortAnsweredByAnother(port, holder, self.last_lines(), spec.log_path)
            if probe.rejected_status is not None:
                self._cleanup(grace_s=min(spec.stop_grace_s, 5.0))
                raise ApiKeyRejected(probe.rejected_status, probe.phase, bool(spec.api_key),
                                     self.last_lines(), spec.log_path)
            now = time.monotonic()
            if self.callbacks.on_tick:
                self.callbacks.on_tick(now - started, probe.phase)
            if now >= deadline:
                self._cleanup(grace_s=spec.stop_grace_s)
                raise ReadinessTimeout(
                    spec.ready_timeout_s, probe.phase, self.last_lines(), spec.log_path
                )
            # Sleeping in wait() returns at once if the engine dies, so a crash fails fast.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(spec.poll_interval_s, deadline - now))

    def wait(self) -> int:
        """Serve until the engine exits, forwarding stop signals to it; return our exit code."""
        process = self._started()
        with self.forwarding_signals():
            returncode = process.wait()
            self._cleanup(grace_s=self.spec.stop_grace_s)  # workers the engine left behind
        return exit_status(returncode, self.stop_signal)

    def stop(self) -> int:
        """Stop the engine (SIGTERM, SIGKILL after the grace period); return our exit code."""
        process = self._started()
        if process.poll() is None and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM
        self._cleanup(grace_s=self.spec.stop_grace_s)
        return exit_status(process.returncode, self.stop_signal)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to the engine's group; SIGKILL it after the grace period, or on a stop
        repeated after `stop_repeat_window_s` (a repeat inside the window is the same stop)."""
        now = time.monotonic()
        if self.stop_signal is None:
            self.stop_signal, self._stop_requested_at = signum, now
        elif now - self._stop_requested_at < self.spec.stop_repeat_window_s:
            return
        else:
            signum = signal.SIGKILL
            self.killed = True
        if self.process is not None:  # else start() delivers it
            self._deliver(signum)

    def exit_problem(self) -> str | None:
        """After `wait()`: one line saying what went wrong with the engine, or None for a clean stop."""
        process = self._started()
        returncode = process.returncode
        if returncode is None or exit_status(returncode, self.stop_signal) == 0:
            return None
        where = f"see the log at {self.spec.log_path}"
        if self.killed:
            return f"the engine did not stop on {_signal_name(self.stop_signal)} and was killed with SIGKILL; {where}"
        if returncode < 0:
            cause = " (not by qwen35: the kernel's out-of-memory killer, or a kill -9)" if -returncode == signal.SIGKILL else ""
            return f"the engine (pid {process.pid}) was killed by {_signal_name(-returncode)}{cause}; {where}"
        last = next((line.strip() for line in reversed(self.last_lines()) if line.strip()), "")
        return f"the engine exited with code {returncode}" + (f": {last[:200]}" if last else "") + f"; {where}"

    @contextlib.contextmanager
    def forwarding_signals(self) -> Iterator[None]:
        """While inside, SIGINT/SIGTERM/SIGHUP to this process become `request_stop` (main thread only)."""
        if self._forwarding or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in _FORWARDED_SIGNALS}
        # Started under nohup, the launcher was asked to outlive its terminal; so does the engine.
        if previous[signal.SIGHUP] is signal.SIG_IGN:
            del previous[signal.SIGHUP]
        for signum in previous:
            signal.signal(signum, self._on_signal)
        self._forwarding = True
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._forwarding = False

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self.process is None:
            return
        if self.process.poll() is None and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM
        try:
            self._cleanup(grace_s=self.spec.stop_grace_s)
        except Qwen35Error:
            if exc_type is None:
                raise  # never hide the error that brought us here behind a cleanup one

    def _on_signal(self, signum: int, frame) -> None:
        # A hang-up (terminal closed, ssh dropped) is a stop request. The engine leads its own
        # session, so the terminal's SIGHUP never reaches it, and it gets SIGTERM instead:
        # engines handle SIGTERM with a clean shutdown but leave SIGHUP at its default, which
        # kills them on the spot. Stopped by our SIGTERM, the exit code is as for a SIGTERM.
        self.request_stop(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def _deliver(self, signum: int) -> None:
        # This runs inside signal handlers, so it takes no lock and starts no thread (either can
        # deadlock against the interrupted main thread); one byte wakes the watchdog instead.
        process_group.signal_group(self.pgid, signum)
        if self._wake_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_fd, b"s")

    def _kill_after_grace(self, wake_read: int) -> None:
        """Watchdog: SIGKILL the group if it outlives the grace period after a stop request."""
        try:
            if os.read(wake_read, 1) != b"s":  # b"q" or end of file: cleanup, no stop
                return
            # Any further byte (a second stop that already SIGKILLed, or cleanup) ends the wait.
            woken, _, _ = select.select([wake_read], [], [], self.spec.stop_grace_s)
            if not woken:
                self.killed = process_group.signal_group(self.pgid, signal.SIGKILL)
        finally:
            os.close(wake_read)

    def _started(self) -> subprocess.Popen:
        if self.process is None:
            raise RuntimeError("engine not started")
        return self.process

    def _cleanup(self, grace_s: float) -> None:
        """Make sure the whole group is gone, then drain the log; raise if it cannot be killed."""
        gone = process_group.terminate_group(self.pgid, grace_s, leader=self.process)
        wake_fd, self._wake_fd = self._wake_fd, None
        if wake_fd is not None:
            with contextlib.suppress(OSError):  # the watchdog may be done and its end closed
                os.write(wake_fd, b"q")
            os.close(wake_fd)
            self._watchdog.join(timeout=_READER_JOIN_S)
        if self._reader is not None:
            # EOF arrives once every holder of the pipe is dead; one that left the group
            # (setsid) may keep it open, so the join is bounded.
            self._reader.join(timeout=_READER_JOIN_S)
        if not gone:
            raise Qwen35Error(
                f"engine processes in group {self.pgid} survived SIGKILL",
                f"they may be stuck in the GPU driver; check `ps -g {self.pgid}`",
            )

    def _open_log(self, header: str):
        """The log file with `header` written, or None (after one warning) when it cannot be written."""
        path = self.spec.log_path
        log_file = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(path, "a", encoding="utf-8")
            log_file.write(header + "\n")
            log_file.flush()
            return log_file
        except OSError as error:
            self._log_failed(error, log_file)
            return None

    def _log_failed(self, error: OSError, log_file) -> None:
        if log_file is not None:
            with contextlib.suppress(OSError):
                log_file.close()
        if self.callbacks.on_warning:
            self.callbacks.on_warning(f"cannot write the engine log {self.spec.log_path} ({error.strerror or error}); "
                                      "the engine keeps running and its output still shows here; free space or "
                                      "pass --log-file elsewhere for the next launch")

    def _copy_output(self, stream, log_file) -> None:
        on_line, prefix = self.callbacks.on_line, self.spec.log_prefix
        with stream:
            for raw in stream:
                line = raw.rstrip("\n")
                if log_file is not None:
                    try:
                        log_file.write(line + "\n")
                        log_file.flush()
                    except OSError as error:  # a full disk: keep draining, or the engine blocks
                        self._log_failed(error, log_file)
                        log_file = None
                with self._tail_lock:
                    self._tail.append(line)
                if on_line is not None:
                    try:
                        on_line(prefix + line)
                    except Exception:
                        # A broken consumer (closed stderr) must not stop the drain, or the
                        # engine blocks on a full pipe; the log file still gets every line.
                        on_line = None
        if log_file is not None:
            with contextlib.suppress(OSError):
                log_file.close()


def _redacted(argv: Sequence[str]) -> list[str]:
    """argv with the value of any --api-key hidden, fit for a log file."""
    shown = []
    for index, arg in enumerate(argv):
        if index > 0 and argv[index - 1] == "--api-key":
            arg = "REDACTED"
        elif arg.startswith("--api-key="):
            arg = "--api-key=REDACTED"
        shown.append(arg)
    return shown


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
