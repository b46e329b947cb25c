"""The connection layer as bad clients meet it, over raw sockets: slow heads and bodies are cut off,
a client that leaves mid-upload is a 499 without a traceback, keep-alive requests answer at once
(TCP_NODELAY), and /health answers while a huge prompt is tokenized."""
import re
import select
import socket
import threading
import time

import httpx
import pytest

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.server.settings import ServerSettings
from scripted_runner import ScriptedRunner
from server_harness import SCRIPTED_CONTEXT, SCRIPTED_NAME, choose_script, metric, serving, wait_for

# Above the 2 s the /health test tolerates: that test's client shares the server's process (and GIL),
# so a stall delays its next request head as much as the server's clock.
HEADER_TIMEOUT = 2.5
BODY_TIMEOUT = 1.0
MAX_BODY = 4 << 20
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def guarded_server(demo_path, demo_tokenizer):
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=2, max_len=SCRIPTED_CONTEXT)
    config = EngineConfig(max_running_requests=2, max_queue=4, max_model_len=SCRIPTED_CONTEXT)
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    settings = ServerSettings(served_model_names=[SCRIPTED_NAME], max_model_len=SCRIPTED_CONTEXT,
                              max_body_bytes=MAX_BODY, header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
                              sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        yield server


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server held the connection for over {limit}s") from None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def _status_counts(server, endpoint: str) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    pattern = re.compile(rf'^qwen35_requests_total\{{endpoint="{re.escape(endpoint)}",status="(\d+)"\}} (\S+)$', re.M)
    return {status: float(value) for status, value in pattern.findall(text)}


def _head(path: str, length: int | None = None) -> bytes:
    extra = f"Content-Type: application/json\r\nContent-Length: {length}\r\n" if length is not None else ""
    return f"{'POST' if length is not None else 'GET'} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def test_idle_and_slowloris_connections_are_closed(guarded_server):
    idle = [_connect(guarded_server) for _ in range(20)]
    partial = [_connect(guarded_server) for _ in range(20)]
    for sock in partial:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    trickler = _connect(guarded_server)
    trickler.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
    deadline = time.monotonic() + HEADER_TIMEOUT + 10
    closed = False
    while not closed:  # one header byte every 50 ms: the head never completes, the connection must still go
        assert time.monotonic() < deadline, "a trickled request head held its connection"
        try:
            trickler.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        closed = bool(select.select([trickler], [], [], 0.05)[0])
    for sock in idle + partial:
        data, took = _read_until_closed(sock, HEADER_TIMEOUT + 10)
        assert data.startswith(b"HTTP/1.1 408 "), data[:80]
        sock.close()
    trickler.close()
    assert httpx.get(guarded_server.url + "/health").status_code == 200


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(guarded_server):
    before = _status_counts(guarded_server, CHAT)
    with _connect(guarded_server) as sock:
        sock.sendall(_head(CHAT, 1000) + b'{"model": "')
        data, took = _read_until_closed(sock, BODY_TIMEOUT + 10)
    assert data.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in data, data[:300]
    assert took < BODY_TIMEOUT + 5
    after = _status_counts(guarded_server, CHAT)
    assert after.get("408", 0) == before.get("408", 0) + 1


def test_a_client_that_leaves_mid_upload_is_a_499_without_a_traceback(guarded_server, server_log):
    before = _status_counts(guarded_server, CHAT)
    for _ in range(3):
        with _connect(guarded_server) as sock:
            sock.sendall(_head(CHAT, 100_000) + b'{"model": "' + b"x" * 1000)
    wait_for(lambda: _status_counts(guarded_server, CHAT).get("499", 0) == before.get("499", 0) + 3,
             what="three 499s counted")
    after = _status_counts(guarded_server, CHAT)
    assert after.get("500", 0) == before.get("500", 0)
    assert not [r for r in server_log if r.exc_info or "Traceback" in r.getMessage()], \
        [r.getMessage() for r in server_log]


def test_a_second_request_on_a_keep_alive_connection_is_not_delayed(guarded_server):
    """Without TCP_NODELAY each request after the first waits ~40 ms for the client's delayed ACK."""
    with _connect(guarded_server) as sock:
        reader = sock.makefile("rb")
        timings = []
        for _ in range(7):
            started = time.perf_counter()
            sock.sendall(_head("/health"))
            assert reader.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            timings.append(time.perf_counter() - started)
    later = sorted(timings[1:])
    assert later[len(later) // 2] < 0.02, [f"{t * 1000:.1f} ms" for t in timings]


def test_health_answers_while_a_huge_prompt_is_tokenized(guarded_server):
    """A prompt near the body limit takes seconds to tokenize; the event loop must not wait for it.

    The server shares this process, so a tokenizer call holding the GIL would freeze this thread
    too: what is measured is the longest gap between consecutive /health answers."""
    prompt = "Once upon a time there was a prompt. " * ((MAX_BODY - 1000) // 37)
    result: dict = {}

    def post() -> None:
        result["response"] = httpx.post(guarded_server.url + "/v1/completions", timeout=300,
                                        json={"model": SCRIPTED_NAME, "prompt": prompt, "max_tokens": 1})

    worker = threading.Thread(target=post)
    answered = [time.monotonic()]
    worker.start()
    with httpx.Client(base_url=guarded_server.url, timeout=30) as client:
        while worker.is_alive():
            assert client.get("/health").status_code == 200
            answered.append(time.monotonic())
            worker.join(0.05)
    took = answered[-1] - answered[0]
    longest_gap = max(later - earlier for earlier, later in zip(answered, answered[1:]))
    assert took > 2, f"the prompt took only {took:.1f}s: too short to show anything"
    assert longest_gap < 2, f"/health went unanswered for {longest_gap:.2f}s while the prompt was tokenized"
    error = result["response"].json()["error"]
    assert result["response"].status_code == 400 and error["code"] == "context_length_exceeded"
    assert metric(httpx.get(guarded_server.url + "/metrics").text, "qwen35_running_requests") == 0
