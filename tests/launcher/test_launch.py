"""`qwen35 launch` as a user runs it, with tests/launcher/fake_engine.py standing in for the engine.

QWEN35_ENGINE_EXECUTABLE points launch at a small shim that takes the engine's real arguments,
keeps the ones the stand-in understands and execs it, so the whole path (plan, preflight,
supervision, readiness, banner, signals, exit code) runs as it would with SGLang.
"""
from __future__ import annotations

import importlib.util
import json
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
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from qwen35.launcher import launch
from qwen35.launcher.profiles import load_profile, plan_profile, plan_request, shipped_path, to_plan_request
from qwen35.planner.errors import InputError
from qwen35.planner.models.registry import registry_config_json
from qwen35.planner.plan import EngineCommand

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]
API_KEY = "sk-test-not-printed-4242"
SHIM = """
import argparse, json, os, sys
import yaml
# What launch passed, for the tests to read: a key must never be among it.
if os.environ.get("FAKE_ENGINE_ARGV_FILE"):
    with open(os.environ["FAKE_ENGINE_ARGV_FILE"], "w") as record:
        json.dump(sys.argv, record)
parser = argparse.ArgumentParser()
for flag in ("--host", "--port", "--served-model-name", "--config"):
    parser.add_argument(flag, default="")
known, _ = parser.parse_known_args()
# SGLang reads flags from its --config YAML; the key reaches the stand-in through its environment.
key = yaml.safe_load(open(known.config))["api-key"] if known.config else ""
# FAKE_ENGINE_SWAP_KEY: the engine starts with another key than the one launch passed.
os.environ["FAKE_ENGINE_API_KEY"] = os.environ.get("FAKE_ENGINE_SWAP_KEY") or key
os.execv(sys.executable, [sys.executable, {fake!r}, "--host", known.host, "--port", known.port,
                          "--model", known.served_model_name,
                          "--startup-log", os.environ.get("FAKE_ENGINE_STARTUP_LOG", ""),
                          "--mode", os.environ.get("FAKE_ENGINE_MODE", "ready")])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def setup(tmp_path):
    """A local checkpoint, a profile for it with an API key variable, and the engine shim."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    shim = tmp_path / "shim.py"
    shim.write_text(SHIM.format(fake=str(FAKE_ENGINE)))
    port = free_port()
    profile = tmp_path / "tiny.yaml"
    profile.write_text(textwrap.dedent(f"""
        version: 1
        model: {model}
        hardware: {{gpu: H100, count: 1}}
        serving:
          host: 127.0.0.1
          port: {port}
          served_model_name: tiny
          api_key_env: QWEN35_TEST_API_KEY
        """))
    env = {**os.environ, "QWEN35_ENGINE_EXECUTABLE": f"{sys.executable} {shim}", "QWEN35_TEST_API_KEY": API_KEY,
           "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("QWEN35_DEBUG", None)
    return {"profile": profile, "port": port, "env": env, "log": tmp_path / "engine.log", "tmp": tmp_path}


class Launch:
    """A running `qwen35 launch` whose stdout and stderr are collected by reader threads."""

    def __init__(self, args: list[str], env: dict, cwd: Path | None = None):
        self.process = subprocess.Popen([*QWEN35, "launch", *args], env=env, cwd=cwd, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self.lines: queue.Queue = queue.Queue()
        for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink) -> None:
        for line in stream:
            sink.append(line)
            self.lines.put(line)

    def wait_for_output(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.out + self.err):
            assert self.process.poll() is None, f"launch exited {self.process.returncode}: {''.join(self.err)}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s: {''.join(self.err)}"
            try:
                self.lines.get(timeout=0.1)
            except queue.Empty:
                pass

    def finish(self, timeout_s: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self.process.stdout.close()
        self.process.stderr.close()
        return code

    def engine_pgid(self) -> int | None:
        found = [m for line in self.err if (m := re.search(r"fake-engine: starting pid=\d+ pgid=(\d+)", line))]
        return int(found[0].group(1)) if found else None

    def kill_everything(self) -> None:
        """Teardown: nothing this test started may survive it, whatever happened."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        pgid = self.engine_pgid()
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def launches():
    started: list[Launch] = []
    yield lambda *args, **kw: started.append(Launch(*args, **kw)) or started[-1]
    for each in started:
        each.kill_everything()


def get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_ready_serves_prints_endpoint_and_stops_on_sigint(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--ready-timeout", "30"], setup["env"])
    run.wait_for_output("is ready at")
    base = f"http://127.0.0.1:{setup['port']}"
    assert get(f"{base}/v1/models") == 401  # the key from QWEN35_TEST_API_KEY reached the engine
    assert get(f"{base}/v1/models", API_KEY) == 200
    run.process.send_signal(signal.SIGINT)
    assert run.finish() == 0
    out, err = "".join(run.out), "".join(run.err)
    assert f"tiny is ready at {base}/v1" in out
    assert f"curl {base}/v1/chat/completions" in out and 'Bearer $QWEN35_TEST_API_KEY' in out
    assert 'OpenAI(base_url="' + base + '/v1", api_key=os.environ["QWEN35_TEST_API_KEY"])' in out
    assert "[sglang] fake-engine: ready to serve" in err  # the log streams to stderr, prefixed
    assert "preflight port: ok" in err and "preflight engine: skip" in err
    log = setup["log"].read_text()
    assert "fake-engine: received SIGINT" in log and "[sglang]" not in log
    assert API_KEY not in out + err + log  # the key is passed, never printed
    assert group_gone(run.engine_pgid())


def test_the_api_key_never_reaches_the_engines_command_line(setup, launches):
    # /proc/PID/cmdline is readable by every local user; the environment and a 0600 file are not.
    argv_file = setup["tmp"] / "argv.json"
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])],
                   {**setup["env"], "FAKE_ENGINE_ARGV_FILE": str(argv_file)})
    run.wait_for_output("is ready at")
    argv = json.loads(argv_file.read_text())
    assert API_KEY not in " ".join(argv) and "--api-key" not in argv
    key_file = Path(argv[argv.index("--config") + 1])
    assert not key_file.exists()  # read at start-up, removed once the engine is ready
    assert get(f"http://127.0.0.1:{setup['port']}/v1/models", API_KEY) == 200
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0


@pytest.mark.parametrize("engine, variable", [("vllm", "VLLM_API_KEY"), ("bundled", "QWEN35_API_KEY")])
def test_vllm_and_the_bundled_runtime_get_the_key_in_their_environment(engine, variable):
    with launch.ApiKeyHandoff(engine, API_KEY) as handoff:
        assert handoff.args == [] and handoff.env == {variable: API_KEY}


def test_sglang_gets_the_key_in_a_private_config_file_that_goes_away():
    with launch.ApiKeyHandoff("sglang", 'k"ey: with # odd characters') as handoff:
        flag, path = handoff.args
        path = Path(path)
        assert flag == "--config" and handoff.env == {}
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        assert yaml.safe_load(path.read_text()) == {"api-key": 'k"ey: with # odd characters'}
    assert not path.parent.exists()
    with pytest.raises(InputError, match="--config"):
        launch.ApiKeyHandoff("sglang", API_KEY, ["python3", "--config", "mine.yaml"])


def test_engine_exit_after_ready_is_our_exit_code(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])],
                   {**setup["env"], "FAKE_ENGINE_MODE": "crash-after-ready"})
    assert run.finish() == 5  # the stand-in's CRASH_AFTER_READY_CODE
    assert "is ready at" in "".join(run.out)
    assert group_gone(run.engine_pgid())


def test_engine_exit_after_ready_is_said_in_one_line(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])],
                   {**setup["env"], "FAKE_ENGINE_MODE": "crash-after-ready"})
    assert run.finish() == 5
    last = "".join(run.err).strip().splitlines()[-1]
    assert last == f"error: the engine exited with code 5: fake-engine: fatal: scheduler died (pretend); " \
                   f"see the log at {setup['log']}"


def test_an_engine_killed_by_sigkill_is_reported_in_one_line(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])], setup["env"])
    run.wait_for_output("is ready at")
    engine = run.engine_pgid()  # the engine leads its group: the pid is the group id
    os.kill(engine, signal.SIGKILL)
    assert run.finish() == 128 + signal.SIGKILL
    err = "".join(run.err)
    assert err.strip().splitlines()[-1] == (
        f"error: the engine (pid {engine}) was killed by SIGKILL (not by qwen35: the kernel's out-of-memory "
        f"killer, or a kill -9); see the log at {setup['log']}")
    assert err.count("error:") == 1 and "Traceback" not in err


def test_a_log_file_that_cannot_be_written_is_one_warning_and_the_engine_stays_supervised(setup, launches):
    # /dev/full fails every write with ENOSPC: a full disk.
    run = launches(["--profile", str(setup["profile"]), "--log-file", "/dev/full"], setup["env"])
    run.wait_for_output("is ready at")
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    err = "".join(run.err)
    warnings = [line for line in err.splitlines() if line.startswith("warning: cannot write the engine log")]
    assert warnings == ["warning: cannot write the engine log /dev/full (No space left on device); the engine "
                        "keeps running and its output still shows here; free space or pass --log-file "
                        "elsewhere for the next launch"]
    assert "Traceback" not in err and "fake-engine: received SIGTERM" in err  # still streamed
    assert group_gone(run.engine_pgid())


def test_crash_during_startup_shows_the_last_lines_and_exits_1(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])],
                   {**setup["env"], "FAKE_ENGINE_MODE": "crash"})
    assert run.finish() == 1
    err = "".join(run.err)
    assert "--- last " in err and "lines of the engine log" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: engine exited with code 3 during start-up") and "CUDA out of memory" in last
    assert str(setup["log"]) in last and not "".join(run.out)
    assert group_gone(run.engine_pgid())


def test_readiness_timeout_stops_the_engine_and_exits_1(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--ready-timeout", "1"],
                   {**setup["env"], "FAKE_ENGINE_MODE": "hang"})
    assert run.finish() == 1
    last = "".join(run.err).strip().splitlines()[-1]
    assert last.startswith("error: engine not ready after 1 s") and "health" in last, last
    assert "fake-engine: listening" in "".join(run.err)  # the last log lines are shown
    assert group_gone(run.engine_pgid())


def test_an_engine_expecting_another_api_key_fails_fast_with_exit_2(setup, launches):
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--ready-timeout", "60"],
                   {**setup["env"], "FAKE_ENGINE_SWAP_KEY": "sk-another-key"})
    assert run.finish() == 2
    err = "".join(run.err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the engine rejected the API key the launcher sent"), last
    assert "401" in last and API_KEY not in err and "sk-another-key" not in err
    assert group_gone(run.engine_pgid())


def test_port_taken_stops_before_starting_anything(setup, launches):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", setup["port"]))
        holder.listen()
        run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])], setup["env"])
        code = run.finish()
    err = "".join(run.err)
    assert code == 2, err
    assert "preflight port: FAIL" in err and f"error: port {setup['port']} on 127.0.0.1 is already in use" in err
    assert not setup["log"].exists() and run.engine_pgid() is None


def test_dry_run_json_is_the_plans_commands_plus_preflight(setup, launches):
    args = ["--profile", "qwen35-397b-a17b-h100-bf16", "--dist-init-addr", "10.0.0.1:20000",
            "--port", str(setup["port"]), "--dry-run", "--json"]
    run = launches(args, {**setup["env"], "HF_HUB_OFFLINE": "0", "HF_HOME": str(setup["tmp"] / "hf")})
    code = run.finish()
    assert code == 0, "".join(run.err)
    printed = json.loads("".join(run.out))
    from dataclasses import replace

    request = replace(to_plan_request(load_profile(shipped_path("qwen35-397b-a17b-h100-bf16"))),
                      dist_init_addr="10.0.0.1:20000", port=setup["port"])
    assert printed["commands"] == [command.to_dict() for command in plan_request(request).commands]
    checks = {check["check"]: check["status"] for check in printed["preflight"]}
    assert checks == {"engine": "skipped", "gpus": "skipped", "model": "warning", "port": "ok", "dist_init_addr": "ok"}


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is installed here")
def test_dry_run_reports_a_missing_engine_with_its_install_command(setup, launches):
    env = {k: v for k, v in setup["env"].items() if k != "QWEN35_ENGINE_EXECUTABLE"}
    run = launches(["--profile", str(setup["profile"]), "--dry-run", "--json"], env)
    assert run.finish() == 1
    engine = json.loads("".join(run.out))["preflight"][0]
    assert engine["check"] == "engine" and engine["status"] == "failed" and 'pip install "sglang[all]"' in engine["detail"]


def test_cpu_demo_dry_run_runs_the_bundled_runtime_on_cpu(setup, launches):
    demo = setup["tmp"] / "demo-model"
    demo.mkdir()
    (demo / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    run = launches(["--profile", "qwen35-demo-cpu", "--port", str(setup["port"]), "--dry-run"], setup["env"], cwd=setup["tmp"])
    assert run.finish() == 0, "".join(run.err)
    line = "".join(run.out).strip().splitlines()[0]
    assert line.startswith("qwen35 serve --model demo-model") and "--device cpu" in line
    assert "preflight gpus: skip - cpu target" in "".join(run.err)


def test_multi_node_plans_need_a_node_rank_and_name_the_others():
    plan = plan_profile(load_profile(shipped_path("qwen35-397b-a17b-h100-bf16")))
    with pytest.raises(InputError, match="spans 2 nodes"):
        launch.node_command(plan, None)
    assert launch.node_command(plan, None, dry_run=True).node_rank == 0
    assert launch.node_command(plan, 1).argv[-3:] == ["1", "--dist-init-addr", "NODE0_IP:20000"]
    with pytest.raises(InputError, match="outside"):
        launch.node_command(plan, 2)
    checks = launch.run_preflight(plan, plan.commands[1], dry_run=True, named_target=True, env={})
    status = {check.name: check for check in checks}
    assert status["port"].status == "skipped" and "does not serve HTTP" in status["port"].detail
    assert status["dist_init_addr"].status == "failed" and isinstance(status["dist_init_addr"].error, InputError)


def test_engine_argv_uses_this_environment_or_the_override():
    sglang = EngineCommand(0, ["python3", "-m", "sglang.launch_server", "--port", "1"], {})
    assert launch.engine_argv(sglang, "sglang", env={}) == [sys.executable, "-m", "sglang.launch_server", "--port", "1"]
    assert launch.engine_argv(sglang, "sglang", env={"QWEN35_ENGINE_EXECUTABLE": "/opt/py -m sglang.launch_server"}) == \
        ["/opt/py", "-m", "sglang.launch_server", "--port", "1"]
    bundled = EngineCommand(0, ["qwen35", "serve", "--model", "m"], {})
    assert launch.engine_argv(bundled, "bundled", env={})[:4] == [sys.executable, "-m", "qwen35.launcher.cli", "serve"]


def test_launch_takes_every_planning_flag_that_plan_takes():
    import typer

    from qwen35.launcher.cli import app

    commands = typer.main.get_command(app).commands
    plan_only = {"emit", "output", "as_json", "as_yaml", "explain"}
    plan_flags = {param.name for param in commands["plan"].params} - plan_only
    assert plan_flags <= {param.name for param in commands["launch"].params}


def fake_report(name: str, count: int):
    from qwen35.planner.hardware.catalog import lookup_gpu
    from qwen35.planner.hardware.detect import DetectedGpu, HardwareReport

    model = lookup_gpu(name)
    gpus = tuple(DetectedGpu(index=i, physical_index=i, vendor=model.vendor, name=model.marketing_name, uuid=f"GPU-{i}",
                             pci_bus_id=f"0000:{i:02x}:00.0", memory_total_bytes=model.memory_bytes, model=model)
                 for i in range(count))
    return HardwareReport(gpus=gpus, vendor=model.vendor if gpus else None, source="nvml" if gpus else "none",
                          driver_version=None, cuda_driver_version=None, links=(), all_pairs_linked=None,
                          visibility=None, warnings=() if gpus else ("NVML not found",))


@pytest.mark.parametrize("found, count, status, says", [
    ("H100", 8, "ok", "8 x NVIDIA H100 80GB"),
    ("H100", 4, "failed", "needs 8 x H100 on this node; 4 GPU(s) are visible"),
    ("L40S", 8, "failed", "smallest visible GPU has"),
    ("H200", 8, "warning", "planned for H100, found 8 x NVIDIA H200"),
    ("H100", 0, "warning", "no GPU detected (NVML not found)"),
])
def test_gpu_preflight_compares_the_detected_gpus_with_the_plan(monkeypatch, found, count, status, says):
    import qwen35.planner.hardware.detect as detect

    monkeypatch.setattr(detect, "detect_hardware", lambda: fake_report(found, count))
    plan = plan_profile(load_profile(shipped_path("qwen35-397b-a17b-h100-fp8")))
    checks = {check.name: check for check in launch.run_preflight(plan, plan.commands[0], dry_run=False,
                                                                  named_target=True, env={})}
    assert checks["gpus"].status == status and says in checks["gpus"].detail, checks["gpus"].detail
    dry = {check.name: check for check in launch.run_preflight(plan, plan.commands[0], dry_run=True,
                                                               named_target=True, env={})}
    assert dry["gpus"].status == "skipped"  # a named target may be another machine


def startup_log(setup, scale_kv: float = 1.0) -> Path:
    """SGLang 0.5.23's start-up lines (tests/launcher/startup_logs) carrying this plan's own figures."""
    plan = plan_profile(load_profile(setup["profile"]))
    text = (Path(__file__).with_name("startup_logs") / "sglang-0.5.23.log").read_text()
    text = (text.replace("max_total_num_tokens=845651", f"max_total_num_tokens={int(plan.memory['kv_tokens'] * scale_kv)}")
            .replace("max_mamba_cache_size: 483", f"max_mamba_cache_size: {plan.memory['state_slots']}")
            .replace("max_running_requests=96", f"max_running_requests={plan.max_running_requests}")
            .replace("context_len=262144", f"context_len={plan.context_length}")
            .replace("'mem_fraction_static': 0.835", f"'mem_fraction_static': {plan.mem_fraction_static}"))
    path = setup["tmp"] / "startup.log"
    path.write_text(text)
    return path


def test_ready_shows_the_engines_figures_beside_the_plans(setup, launches):
    env = {**setup["env"], "FAKE_ENGINE_STARTUP_LOG": str(startup_log(setup))}
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])], env)
    run.wait_for_output("curl ")  # the snippets come after the check
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    err = "".join(run.err)
    table = err[err.index("sglang at start-up vs the plan"):err.index("time to ready:")]
    for label in ("KV tokens", "state slots", "running requests", "context length", "memory fraction"):
        assert re.search(rf"{label} +(\S+) +\1 +\+0\.0%", table), (label, table)
    assert re.search(r"time to ready: weights loaded [\d.]+ s, graphs captured [\d.]+ s, serving [\d.]+ s", err)
    assert "warning: KV tokens" not in err


def test_an_engine_below_the_plan_warns_and_strict_plan_stops_it_cleanly(setup, launches):
    env = {**setup["env"], "FAKE_ENGINE_STARTUP_LOG": str(startup_log(setup, scale_kv=0.8))}
    warned = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"])], env)
    warned.wait_for_output("curl ")
    warned.process.send_signal(signal.SIGTERM)
    assert warned.finish() == 0
    assert re.search(r"warning: KV tokens: the engine has \d+, the plan \d+ \(-20\.0%\): SGLang found less free GPU "
                     r"memory", "".join(warned.err))

    strict = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--strict-plan"], env)
    assert strict.finish() == 1
    err = "".join(strict.err)
    assert re.search(r"error: sglang came up below the plan: KV tokens \d+ against \d+ planned \(-20\.0%, tolerance 5%\); "
                     r"stopping it \(--strict-plan\)", err)
    assert "fake-engine: received SIGTERM, shutting down" in err and "curl " not in "".join(strict.out)
    assert group_gone(strict.engine_pgid())
    lenient = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--strict-plan",
                        "--plan-tolerance", "25"], env)
    lenient.wait_for_output("curl ")
    lenient.process.send_signal(signal.SIGTERM)
    assert lenient.finish() == 0


def test_json_launch_prints_the_ready_and_plan_check_events(setup, launches):
    env = {**setup["env"], "FAKE_ENGINE_STARTUP_LOG": str(startup_log(setup, scale_kv=0.8))}
    run = launches(["--profile", str(setup["profile"]), "--log-file", str(setup["log"]), "--json"], env)
    run.wait_for_output('"event": "plan_check"')
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    events = [json.loads(line) for line in run.out]
    assert [event["event"] for event in events] == ["ready", "plan_check"]
    assert events[0]["url"] == f"http://127.0.0.1:{setup['port']}/v1" and events[0]["model"] == "tiny"
    check = events[1]
    assert check["below_plan"] == ["kv_tokens"] and check["tolerance"] == 0.05
    kv = next(row for row in check["figures"] if row["figure"] == "kv_tokens")
    assert kv["off"] and round(kv["difference"], 3) == -0.2 and "--mem-fraction-static" in kv["hint"]
    assert {"weights loaded", "graphs captured", "serving"} <= set(check["phases_s"])
