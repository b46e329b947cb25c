"""Session fixtures: the demo checkpoint, and real uvicorn servers on free ports in threads.

`demo_server` serves the random-weight demo model; `scripted_server` serves the same
tokenizer and chat template with a ScriptedRunner, so reasoning and tool calls can be
tested through the real HTTP, engine and parsing path.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import uvicorn

from qwen35.runtime.demo import write_demo_checkpoint
from qwen35.runtime.engine.async_engine import AsyncEngine, EngineConfig
from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.llm import DEFAULT_STOP_TOKEN_IDS
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.server.app import create_app
from qwen35.runtime.server.launch import bind_socket
from qwen35.runtime.server.settings import ServerSettings, sampling_defaults_from
from qwen35.runtime.tokenizer import load_tokenizer
from scripted_runner import ScriptedRunner

DEMO_NAME = "qwen35-demo"
SCRIPTED_NAME = "qwen35-scripted"
API_KEY = "sk-test-4f1c"
CONTEXT = 256
SCRIPTED_CONTEXT = 2048  # the demo tokenizer is small, so tool prompts run long

TOOL_CALL_SCRIPT = (
    "I will look that up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n</function>\n</tool_call>\n"
    "<tool_call>\n<function=get_time>\n<parameter=zone>\nEurope/Paris\n</parameter>\n</function>\n</tool_call>"
)
REASONING_SCRIPT = "The user wants a number. Two plus two is four.\n</think>\n\nThe answer is 4."
SCRIPTS = {
    "[tools]": TOOL_CALL_SCRIPT,
    "[reason]": REASONING_SCRIPT,
    "[long]": " ".join(["word"] * 200),
}
DEFAULT_SCRIPT = "Hello from the script."
TOOL_RESULT_ANSWER = "It is sunny in Paris for the next 3 days."


def choose_script(prompt: str) -> str:
    """The scripted model's answer: by the marker in the prompt, or the tool-result follow-up."""
    turn = prompt[prompt.rfind("<|im_start|>user"):]
    if "<tool_response>" in turn:
        return TOOL_RESULT_ANSWER
    forced = prompt.rfind("<function=")
    if forced > prompt.rfind("<|im_start|>assistant"):
        # tool_choice wrote the call's start into the prompt: continue it.
        return ("get_weather>\n" if prompt.endswith("<function=") else "") + \
            "<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call>"
    for marker, script in SCRIPTS.items():
        if marker in turn:
            return script
    return DEFAULT_SCRIPT


@dataclass
class RunningServer:
    """A server started by `serving`: its base URL and the engine behind it."""

    url: str
    engine: AsyncEngine
    runner: object

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@contextmanager
def serving(engine: AsyncEngine, tokenizer, settings: ServerSettings):
    """Run create_app's app in uvicorn on a free port in a thread; stop it on exit."""
    app = create_app(engine, tokenizer, settings)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    ready = threading.Event()
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        ready.wait(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", engine, engine.runner)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("server") / "qwen35-demo", seed=0)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_checkpoint):
    return load_tokenizer(demo_checkpoint)


def _settings(name: str, checkpoint, **overrides) -> ServerSettings:
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    values = dict(served_model_names=[name], max_model_len=CONTEXT, model_root=str(checkpoint),
                  request_timeout=120.0, max_n=4, sampling_defaults=sampling_defaults_from(generation),
                  max_body_bytes=64 * 1024)
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture(scope="session")
def demo_server(demo_checkpoint, demo_tokenizer):
    model = load_model(demo_checkpoint, progress=False)
    runner = TorchModelRunner(model, num_rows=32, max_len=CONTEXT)
    engine = AsyncEngine(runner, demo_tokenizer,
                         EngineConfig(max_running_requests=32, max_queue=64, max_model_len=CONTEXT,
                                      prefill_chunk_size=64, max_prefill_tokens=512),
                         eos_token_ids=DEFAULT_STOP_TOKEN_IDS)
    with serving(engine, demo_tokenizer, _settings(DEMO_NAME, demo_checkpoint)) as server:
        yield server


@pytest.fixture(scope="session")
def scripted_server(demo_checkpoint, demo_tokenizer):
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=4, max_len=SCRIPTED_CONTEXT)
    engine = AsyncEngine(runner, demo_tokenizer,
                         EngineConfig(max_running_requests=4, max_queue=16, max_model_len=SCRIPTED_CONTEXT),
                         eos_token_ids=DEFAULT_STOP_TOKEN_IDS)
    # Scripted logits are one-hot, so greedy picks the same tokens as sampling would, without
    # paying for a full-vocabulary top_k sort on every step.
    settings = _settings(SCRIPTED_NAME, demo_checkpoint, max_model_len=SCRIPTED_CONTEXT,
                         sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        try:
            yield server
        finally:
            runner.gate.set()


@pytest.fixture(scope="session")
def tight_server(demo_checkpoint, demo_tokenizer):
    """One row, one queue place, an API key and a short timeout: for 503, 401 and 504."""
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=1, max_len=CONTEXT)
    engine = AsyncEngine(runner, demo_tokenizer,
                         EngineConfig(max_running_requests=1, max_queue=1, max_model_len=CONTEXT),
                         eos_token_ids=DEFAULT_STOP_TOKEN_IDS)
    settings = _settings(SCRIPTED_NAME, demo_checkpoint, api_key=API_KEY, request_timeout=1.0,
                         sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        try:
            yield server
        finally:
            runner.gate.set()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        pause.wait(0.01)


def metric(text: str, name: str) -> float:
    """One unlabelled sample's value from Prometheus exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)
