"""Stopping a server with work in flight: open streams end with an error event and [DONE] (not cut
mid-chunk), waiting requests get a 503, and the log holds no traceback. First `qwen35 serve` under a
real SIGTERM, then the same path in-process with the decode step held, so the stream is surely open."""
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.server.settings import ServerSettings
from scripted_runner import ScriptedRunner
from server_harness import SCRIPTED_CONTEXT, SCRIPTED_NAME, choose_script, serving, wait_for

QWEN35 = str(Path(sys.executable).with_name("qwen35"))


def _events(lines) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_sigterm_ends_an_open_stream_with_an_error_event(demo_path):
    process = subprocess.Popen(
        [QWEN35, "serve", "--model", str(demo_path), "--port", "0", "--served-model-name", "demo",
         "--max-model-len", "4096", "--max-running-requests", "2", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [log.put(line) for line in process.stderr], daemon=True).start()
    seen: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None:
            assert process.poll() is None and time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(log.get(timeout=1))
            except queue.Empty:
                continue
            match = re.search(r"serving demo .* at (http://127\.0\.0\.1:\d+)/v1", seen[-1])
            url = match.group(1) if match else None
        body = {"model": "demo", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True,
                "stream": True}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():  # a cut stream raises here (incomplete chunked read)
                lines.append(line)
                if len(_events(lines)) == 3:
                    process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    events = _events(lines)
    assert events[-1] == "[DONE]", events[-3:]
    error = json.loads(events[-2])["error"]
    assert error["code"] == "shutting_down" and error["type"] == "server_error", error
    assert all(json.loads(event)["choices"][0]["finish_reason"] is None for event in events[:-2])
    time.sleep(0)
    while not log.empty():
        seen.append(log.get())
    text = "".join(seen)
    assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    assert "timeout graceful shutdown exceeded" not in text


def test_stopping_the_server_ends_streams_and_waiting_requests_cleanly(demo_path, demo_tokenizer):
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=1, max_len=SCRIPTED_CONTEXT)
    config = EngineConfig(max_running_requests=1, max_queue=2, max_model_len=SCRIPTED_CONTEXT)
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    settings = ServerSettings(served_model_names=[SCRIPTED_NAME], max_model_len=SCRIPTED_CONTEXT,
                              sampling_defaults={"temperature": 0.0})
    long_chat = {"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": "[long]"}], "max_tokens": 150,
                 "enable_thinking": False}
    results: dict = {}
    with serving(engine, demo_tokenizer, settings) as server:
        runner.gate.clear()  # the first decode step waits inside the runner: the stream stays open
        with httpx.Client(base_url=server.url, timeout=60) as client:
            with client.stream("POST", "/v1/chat/completions", json={**long_chat, "stream": True}) as response:
                lines = []
                stream = response.iter_lines()
                while len(_events(lines)) < 2:  # the role chunk and the first token
                    lines.append(next(stream))
                waiting = threading.Thread(target=lambda: results.update(
                    waiting=httpx.post(server.url + "/v1/chat/completions", json=long_chat, timeout=60)))
                waiting.start()
                wait_for(lambda: engine.num_waiting == 1, what="second request queued")
                server.server.should_exit = True  # what uvicorn's SIGTERM handler sets
                threading.Timer(0.2, runner.gate.set).start()  # the step in flight finishes during the drain
                lines += list(stream)
            waiting.join(30)
    events = _events(lines)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "shutting_down", events[-3:]
    refused = results["waiting"]
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down", refused.text
    assert not engine.is_running and engine.num_running == 0 and engine.num_waiting == 0
