"""The server test harness: demo/scripted servers on real uvicorn, scripts, and polling helpers."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.server.app import create_app
from qwen35.runtime.server.launch import bind_socket
from qwen35.runtime.server.settings import ServerSettings
from qwen35.runtime.server.transport import build_server

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
OSLO_CALL_SCRIPT = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call>"
SCRIPTS = {
    "[tools]": TOOL_CALL_SCRIPT,
    "[oslo]": OSLO_CALL_SCRIPT,
    "[json]": '{"answer": 42, "items": ["a", "b"]}',
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
    server: object = None  # the DrainingServer, for tests that stop it themselves

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@contextmanager
def serving(engine: AsyncEngine, tokenizer, settings: ServerSettings):
    """Run create_app's app on a free port in a thread, with the transport `qwen35 serve` uses; stop it on exit."""
    app = create_app(engine, tokenizer, settings)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    ready = threading.Event()
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        ready.wait(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", engine, engine.engine.runner, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


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
