"""`qwen35 serve` as a user runs it: a subprocess on a free port, answered by the openai client."""
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from openai import OpenAI

QWEN35 = str(Path(sys.executable).with_name("qwen35"))


def _run(*args, timeout=60):
    return subprocess.run([QWEN35, *args], capture_output=True, text=True, timeout=timeout)


def test_help_shows_examples_and_every_option():
    result = _run("serve", "--help")
    assert result.returncode == 0
    for option in ("--model", "--host", "--port", "--device", "--dtype", "--served-model-name", "--api-key",
                   "--max-model-len", "--max-running-requests", "--max-queue", "--request-timeout"):
        assert option in result.stdout, option
    assert "Examples" in result.stdout and "qwen35 serve --model" in result.stdout


def test_bad_usage_exits_2_with_a_hint(tmp_path):
    missing = _run("serve", "--model", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode == 2 and "no checkpoint directory" in missing.stderr
    assert "Traceback" not in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = _run("serve", "--model", str(tmp_path), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "cannot listen" in busy.stderr and "--port" in busy.stderr
    bad = _run("serve", "--model", str(tmp_path), "--max-running-requests", "0")
    assert bad.returncode == 2 and "--max-running-requests" in bad.stderr


def test_serve_subprocess_answers_the_openai_client(demo_path):
    env = {**os.environ, "QWEN35_API_KEY": "sk-cli"}
    process = subprocess.Popen(
        [QWEN35, "serve", "--model", str(demo_path), "--port", "0", "--served-model-name", "demo",
         "--max-model-len", "128", "--max-running-requests", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        url = None
        seen = []
        while url is None:
            assert process.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "no 'serving ... at' line: " + "".join(seen)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            match = re.search(r"serving demo .* at (http://127\.0\.0\.1:\d+/v1)", line)
            url = match.group(1) if match else None
        client = OpenAI(base_url=url, api_key="sk-cli", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=3)
        assert reply.usage.completion_tokens <= 3 and reply.choices[0].finish_reason in ("length", "stop")
        assert httpx.post(url + "/chat/completions", json={"messages": []}).status_code == 401
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal: the CLI reports Ctrl+C as 130.
        assert process.returncode in (0, 130)
        assert stdout == "", "the server writes nothing to stdout"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_requests_without_max_tokens_get_the_servers_default(demo_path):
    """On the CPU a request that names no max_tokens stops after DEFAULT_MAX_TOKENS_CPU tokens, not the context;
    --default-max-tokens sets it; an explicit max_tokens wins."""
    import pytest
    from fastapi.testclient import TestClient

    from qwen35.planner.errors import InputError
    from qwen35.runtime.server.launch import DEFAULT_MAX_TOKENS_CPU, ServeOptions, build_app

    app, summary = build_app(ServeOptions(model=str(demo_path), device="cpu", max_model_len=512), progress=False)
    assert app.state.qwen35.settings.default_max_tokens == DEFAULT_MAX_TOKENS_CPU
    app, summary = build_app(ServeOptions(model=str(demo_path), device="cpu", max_model_len=512,
                                          default_max_tokens=3), progress=False)
    body = {"model": summary["model"], "prompt": "Hello", "temperature": 0, "ignore_eos": True}
    with TestClient(app) as client:
        named_none = client.post("/v1/completions", json=body).json()
        named = client.post("/v1/completions", json={**body, "max_tokens": 5}).json()
    assert named_none["usage"]["completion_tokens"] == 3 and named_none["choices"][0]["finish_reason"] == "length"
    assert named["usage"]["completion_tokens"] == 5
    with pytest.raises(InputError, match="--default-max-tokens"):
        ServeOptions(model=str(demo_path), default_max_tokens=0).validate()
