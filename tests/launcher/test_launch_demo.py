"""`qwen35 launch` end to end: the real bundled runtime from the CPU demo profile, and dry-run parity with plan."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qwen35.launcher import launch

QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (how we look for survivors)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_demo_profile_serves_the_openai_client_and_stops_cleanly_on_sigterm(tmp_path):
    from openai import OpenAI

    from qwen35.runtime.demo import write_demo_checkpoint

    write_demo_checkpoint(tmp_path / "demo-model")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)}
    launcher = subprocess.Popen([*QWEN35, "launch", "--profile", "qwen35-demo-cpu", "--port", str(port),
                                 "--ready-timeout", "240"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_lines: list[str] = []
    err_lines: list[str] = []  # read as it comes, so a full pipe never blocks the launcher
    readers = [threading.Thread(target=lambda: out_lines.extend(launcher.stdout), daemon=True),
               threading.Thread(target=lambda: err_lines.extend(launcher.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        # Ready as the user sees it: launch prints the endpoint once its own probe passes (the
        # engine may answer a client a moment earlier).
        deadline = time.monotonic() + 240
        while not any("is ready at" in line for line in out_lines):
            assert launcher.poll() is None, "".join(err_lines)
            assert time.monotonic() < deadline, "the demo server never became ready"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        served = [model.id for model in client.models.list().data]
        assert "demo-model" in served
        reply = client.chat.completions.create(model="demo-model", max_tokens=4, temperature=0,
                                               messages=[{"role": "user", "content": "Hello"}])
        assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"
        # The printed examples, run as printed: each asks for a bounded answer, so on the CPU demo
        # they come back in seconds rather than running to the 8192-token context.
        out = "".join(out_lines)
        snippet = out[out.index("# pip install openai"):]
        started = time.monotonic()
        example = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
        assert example.returncode == 0, example.stderr
        assert time.monotonic() - started < 60
        body = json.loads(re.search(r"-d '(.*)'", out).group(1))
        assert body["max_tokens"] == launch.CPU_EXAMPLE_MAX_TOKENS and body["model"] == "demo-model"
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        for reader in readers:
            reader.join(timeout=10)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    out, err = "".join(out_lines), "".join(err_lines)
    assert launcher.returncode == 0, err
    assert f"127.0.0.1:{port}/v1" in out  # the endpoint and the ready-to-paste snippets
    # The bundled runtime's own start-up figures beside the plan's, its pools included.
    table = err[err.index("bundled at start-up vs the plan"):err.index("time to ready:")]
    assert re.search(r"running requests +4 +4 +\+0\.0%", table) and re.search(r"context length +8192 +8192 +\+0\.0%", table)
    assert re.search(r"KV tokens +32768 +32768 +\+0\.0%", table) and re.search(r"state slots +4 +4 +\+0\.0%", table)
    assert re.search(r"time to ready: weights loaded [\d.]+ s, serving [\d.]+ s", err)
    assert processes_mentioning(f"--port {port}") == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_launch_dry_run_json_prints_the_same_commands_as_plan():
    profile = "qwen35-397b-a17b-h200-fp8"
    planned = subprocess.run([*QWEN35, "plan", "--profile", profile, "--json"], capture_output=True, text=True,
                             timeout=120)
    assert planned.returncode == 0, planned.stderr
    dry = subprocess.run([*QWEN35, "launch", "--profile", profile, "--dry-run", "--json"], capture_output=True,
                         text=True, timeout=120)
    # The dry run exits non-zero here when SGLang is not installed; its JSON is printed either way.
    launched = json.loads(dry.stdout)
    assert launched["commands"] == json.loads(planned.stdout)["commands"]
    assert launched["commands"][0]["argv"][:3] == ["python3", "-m", "sglang.launch_server"]
