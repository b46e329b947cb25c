"""Supervision against real processes: tests/launcher/fake_engine.py plays the engine.

The launcher as a process of its own, under signals, is test_supervise_signals.py.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qwen35.launcher.readiness import PHASE_HEALTH, PHASE_MODELS, local_base_url
from qwen35.launcher.supervise import (
    ApiKeyRejected,
    EngineCallbacks,
    EngineCrashed,
    EngineProcess,
    PortAnsweredByAnother,
    ReadinessTimeout,
    Supervisor,
    exit_status,
)
from qwen35.planner.errors import InputError, Qwen35Error
from process_checks import assert_gone

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
PREFIX = "[fake] "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_spec(tmp_path: Path, *engine_args: str, **overrides) -> EngineProcess:
    port = free_port()
    settings = dict(
        argv=[sys.executable, str(FAKE_ENGINE), "--port", str(port), *engine_args],
        log_path=tmp_path / "logs" / "engine.log",
        log_prefix=PREFIX,
        base_url=local_base_url("127.0.0.1", port),
        ready_timeout_s=10.0,
        poll_interval_s=0.05,
        stop_grace_s=2.0,
    )
    settings.update(overrides)
    return EngineProcess(**settings)


class Recorder:
    """Collects callbacks; on_line runs on the reader thread, hence the lock."""

    def __init__(self):
        self.lines: list[str] = []
        self.ticks: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def callbacks(self) -> EngineCallbacks:
        return EngineCallbacks(on_line=self.on_line, on_tick=lambda s, p: self.ticks.append((s, p)))

    def on_line(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def child_pid(self) -> int:
        with self.lock:
            found = [int(m.group(1)) for line in self.lines if (m := re.search(r"child pid=(\d+)", line))]
        assert found, "fake engine did not report its child"
        return found[0]


def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_ready_path_streams_prefixed_lines_and_stops_cleanly(tmp_path):
    spec = make_spec(tmp_path, "--ready-after-s", "0.4", "--spawn-child")
    recorder = Recorder()
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        assert supervisor.wait_ready() == ["fake-model"]
        wait_for(lambda: any("child pid=" in line for line in recorder.lines))
        child = recorder.child_pid()
        assert supervisor.stop() == 0
        assert supervisor.exit_problem() is None
    assert_gone(supervisor.pgid, child)

    assert all(line.startswith(PREFIX) for line in recorder.lines)
    assert f"{PREFIX}fake-engine: ready to serve" in recorder.lines
    log_text = spec.log_path.read_text()
    assert "\nfake-engine: ready to serve\n" in log_text and PREFIX not in log_text
    assert "fake-engine: received SIGTERM, shutting down" in log_text
    phases = [phase for _, phase in recorder.ticks]
    assert phases and phases[0] == PHASE_HEALTH and set(phases) <= {PHASE_HEALTH, PHASE_MODELS}
    assert all(b >= a for (a, _), (b, _) in zip(recorder.ticks, recorder.ticks[1:]))


def test_api_key_is_sent_on_probes(tmp_path):
    spec = make_spec(tmp_path, "--api-key", "sekrit", api_key="sekrit")
    with Supervisor(spec) as supervisor:
        supervisor.start()
        assert supervisor.wait_ready() == ["fake-model"]
        assert supervisor.stop() == 0
    assert_gone(supervisor.pgid)


@pytest.mark.parametrize("engine_args, engine_env, probe_key, status, endpoint, says", [
    (["--api-key", "right"], {}, "wrong", 401, "/v1/models", "rejected the API key the launcher sent"),
    ([], {"FAKE_ENGINE_API_KEY": "from-env"}, None, 401, "/v1/models", "requires an API key and the launcher sent none"),
    (["--api-key", "right", "--key-guards-health", "--reject-status", "403"], {}, "wrong", 403, "/health",
     "rejected the API key the launcher sent"),
], ids=["wrong-key", "no-key", "403-on-health"])
def test_rejected_api_key_fails_fast_and_kills_the_group(tmp_path, engine_args, engine_env, probe_key, status,
                                                         endpoint, says):
    spec = make_spec(tmp_path, *engine_args, "--spawn-child", env=engine_env, api_key=probe_key)
    recorder = Recorder()
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        started = time.monotonic()
        with pytest.raises(ApiKeyRejected) as caught:
            supervisor.wait_ready()
        assert time.monotonic() - started < 5.0  # not a readiness timeout (10 s here)
        assert_gone(supervisor.pgid, recorder.child_pid())  # already, before __exit__
    rejected = caught.value
    assert isinstance(rejected, InputError) and rejected.exit_code == 2 and rejected.status == status
    assert says in rejected.message and f"GET {endpoint} answered {status}" in rejected.message
    assert "serving.api_key_env" in rejected.hint and str(spec.log_path) in rejected.hint
    assert "right" not in rejected.one_line() and "wrong" not in rejected.one_line()
    if probe_key is None:
        assert "QWEN35_API_KEY" in rejected.hint


def test_crash_during_startup_reports_exit_code_and_last_lines(tmp_path):
    spec = make_spec(tmp_path, "--mode", "crash", "--ready-after-s", "0.2", "--spawn-child")
    recorder = Recorder()
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        started = time.monotonic()
        with pytest.raises(EngineCrashed) as caught:
            supervisor.wait_ready()
        assert time.monotonic() - started < 5.0  # fails fast, long before ready_timeout_s
    crash = caught.value
    assert crash.returncode == 3 and crash.exit_code == 1
    assert crash.last_lines[-1] == "fake-engine: RuntimeError: CUDA out of memory (pretend)"
    assert "exited with code 3" in crash.message and "CUDA out of memory" in crash.message
    assert str(spec.log_path) in crash.hint
    assert_gone(supervisor.pgid, recorder.child_pid())


def test_readiness_timeout_kills_a_group_that_ignores_sigterm(tmp_path):
    spec = make_spec(
        tmp_path, "--mode", "hang", "--spawn-child", "--child-ignores-sigterm", "--ignore-sigterm",
        ready_timeout_s=0.8, stop_grace_s=0.5,
    )
    recorder = Recorder()
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        with pytest.raises(ReadinessTimeout) as caught:
            supervisor.wait_ready()
        assert_gone(supervisor.pgid, recorder.child_pid())  # already, before __exit__
    timeout = caught.value
    assert timeout.phase == PHASE_HEALTH and timeout.timeout_s == 0.8
    assert "still waiting on /health" in timeout.message
    assert "fake-engine: listening on" in "\n".join(timeout.last_lines)
    assert supervisor.process.returncode == -signal.SIGKILL


def test_readiness_timeout_in_models_phase(tmp_path):
    spec = make_spec(tmp_path, "--mode", "no-models", ready_timeout_s=0.6)
    with Supervisor(spec) as supervisor:
        supervisor.start()
        with pytest.raises(ReadinessTimeout) as caught:
            supervisor.wait_ready()
    assert caught.value.phase == PHASE_MODELS
    assert "still waiting on /v1/models" in caught.value.message
    assert_gone(supervisor.pgid)


def test_crash_while_serving_returns_the_engine_exit_code(tmp_path):
    spec = make_spec(tmp_path, "--mode", "crash-after-ready", "--spawn-child")
    recorder = Recorder()
    previous = signal.getsignal(signal.SIGTERM)
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        assert supervisor.wait_ready() == ["fake-model"]
        assert supervisor.wait() == 5
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored after serving
    assert_gone(supervisor.pgid, recorder.child_pid())


def test_stop_request_escalates_to_sigkill_after_grace(tmp_path):
    spec = make_spec(tmp_path, "--ignore-sigterm", "--spawn-child", stop_grace_s=0.5)
    recorder = Recorder()
    with Supervisor(spec, recorder.callbacks()) as supervisor:
        supervisor.start()
        supervisor.wait_ready()
        # What the SIGTERM handler does, from another thread while wait() blocks.
        threading.Timer(0.1, supervisor.request_stop).start()
        started = time.monotonic()
        assert supervisor.wait() == 128 + signal.SIGKILL
        assert 0.5 <= time.monotonic() - started < 5.0
        assert supervisor.exit_problem() == ("the engine did not stop on SIGTERM and was killed with SIGKILL; "
                                             f"see the log at {spec.log_path}")
    assert_gone(supervisor.pgid, recorder.child_pid())


def test_exception_inside_the_block_kills_the_group(tmp_path):
    spec = make_spec(tmp_path, "--spawn-child")
    recorder = Recorder()
    with pytest.raises(KeyError):
        with Supervisor(spec, recorder.callbacks()) as supervisor:
            supervisor.start()
            supervisor.wait_ready()
            raise KeyError("boom")
    assert_gone(supervisor.pgid, recorder.child_pid())


def test_engine_started_from_a_worker_thread_outlives_that_thread(tmp_path):
    # The parent-death signal follows the thread that forked; only the main thread may set it.
    spec = make_spec(tmp_path)
    with Supervisor(spec) as supervisor:
        starter = threading.Thread(target=supervisor.start)
        starter.start()
        starter.join()
        assert supervisor.wait_ready() == ["fake-model"]
        assert supervisor.process.poll() is None
        assert supervisor.stop() == 0
    assert_gone(supervisor.pgid)


def test_exit_status_mapping():
    assert exit_status(0, None) == 0
    assert exit_status(7, None) == 7
    assert exit_status(-signal.SIGKILL, None) == 137
    assert exit_status(0, signal.SIGTERM) == 0
    assert exit_status(-signal.SIGTERM, signal.SIGTERM) == 0
    assert exit_status(128 + signal.SIGINT, signal.SIGINT) == 0
    assert exit_status(-signal.SIGKILL, signal.SIGTERM) == 137
    assert exit_status(1, signal.SIGTERM) == 1


def test_local_base_url_reaches_wildcard_binds():
    assert local_base_url("0.0.0.0", 30000) == "http://127.0.0.1:30000"
    assert local_base_url("::", 8000) == "http://[::1]:8000"
    assert local_base_url("fe80::1", 8000) == "http://[fe80::1]:8000"
    assert local_base_url("gpu-node-3", 8000) == "http://gpu-node-3:8000"


def test_api_key_is_redacted_in_the_log_header(tmp_path):
    spec = make_spec(tmp_path, "--api-key", "sekrit", api_key="sekrit")
    with Supervisor(spec) as supervisor:
        supervisor.start()
        supervisor.wait_ready()
    header = spec.log_path.read_text().splitlines()[0]
    assert header.startswith("# qwen35: ") and "--api-key REDACTED" in header and "sekrit" not in header
    assert_gone(supervisor.pgid)


def test_missing_engine_binary_is_a_clear_error(tmp_path):
    spec = make_spec(tmp_path, argv=[str(tmp_path / "no-such-engine")])
    with Supervisor(spec) as supervisor, pytest.raises(Qwen35Error, match="cannot start the engine"):
        supervisor.start()


def test_a_failing_line_callback_does_not_stall_the_engine(tmp_path):
    def broken(line: str) -> None:
        raise BrokenPipeError("stderr closed")

    spec = make_spec(tmp_path, "--spawn-child")
    with Supervisor(spec, EngineCallbacks(on_line=broken)) as supervisor:
        supervisor.start()
        assert supervisor.wait_ready() == ["fake-model"]
        assert supervisor.stop() == 0
    assert "fake-engine: ready to serve" in spec.log_path.read_text()
    child = int(re.search(r"child pid=(\d+)", spec.log_path.read_text()).group(1))
    assert_gone(supervisor.pgid, child)


def test_a_ready_answer_from_another_server_on_the_port_is_refused(tmp_path):
    # Something else took the port after the preflight and answers like an engine, while ours
    # (here: one that hangs on another port) is still loading.
    impostor_port = free_port()
    impostor = subprocess.Popen([sys.executable, str(FAKE_ENGINE), "--port", str(impostor_port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert "starting pid=" in impostor.stdout.readline()
        spec = make_spec(tmp_path, "--mode", "hang", base_url=local_base_url("127.0.0.1", impostor_port))
        with Supervisor(spec) as supervisor:
            supervisor.start()
            with pytest.raises(PortAnsweredByAnother) as caught:
                supervisor.wait_ready()
            assert supervisor.process.poll() is not None  # our engine was stopped
        message = caught.value.one_line()
        assert message.startswith(f"port {impostor_port} is answered by pid {impostor.pid} (")
        assert "not by the engine this launch started" in message and caught.value.exit_code == 2
        assert impostor.poll() is None  # theirs is left alone
    finally:
        impostor.kill()
        impostor.wait()


def test_a_foreign_listener_is_only_a_warning_where_the_engine_may_run_in_a_container(tmp_path):
    impostor_port = free_port()
    impostor = subprocess.Popen([sys.executable, str(FAKE_ENGINE), "--port", str(impostor_port)],
                                stdout=subprocess.PIPE, text=True)
    warnings: list[str] = []
    try:
        assert "starting pid=" in impostor.stdout.readline()
        spec = make_spec(tmp_path, "--mode", "hang", base_url=local_base_url("127.0.0.1", impostor_port),
                         foreign_listener_fatal=False)
        with Supervisor(spec, EngineCallbacks(on_warning=warnings.append)) as supervisor:
            supervisor.start()
            assert supervisor.wait_ready() == ["fake-model"]
            supervisor.stop()
        assert len(warnings) == 1
        assert warnings[0].startswith(f"port {impostor_port} is served by pid {impostor.pid} ({sys.executable} ")
        assert warnings[0].endswith("), not by a process the launcher started (expected when the engine runs in a "
                                    "container)")
    finally:
        impostor.kill()
        impostor.wait()
