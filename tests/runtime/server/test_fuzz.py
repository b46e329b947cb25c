"""A seeded fuzzer over both request schemas: wrong types, values at and past every range, hostile
unicode, deep nesting, large sizes, and clients that leave mid-upload or mid-stream. No input may
get a 5xx, fail an engine step or log an error; the server answers good requests afterwards.
(Slow clients, whose cut-offs take seconds, are in test_transport.py.)"""
import json
import logging
import random
import re
import socket

import httpx

from server_harness import SCRIPTED_NAME, wait_for

SEED = 20240615
REQUESTS = 600
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


class Raw:
    """JSON text written as is: what Python's json cannot produce (10,000 levels, 5,000-digit integers)."""

    def __init__(self, text: str):
        self.text = text


def dump(value) -> str:
    """JSON text of a value that may hold Raw pieces, NaN and lone surrogates (written as \\u escapes)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(str(key))}:{dump(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value)


def nested(depth: int, rng: random.Random) -> Raw:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    inner = rng.choice(["1", '"x"', "null", "[]", "{}"])
    return Raw(opener * depth + inner + closer * depth)


TYPES = [None, True, False, 0, -1, 1, 1.5, "", "x", [], {}, [1, "a", None], {"a": 1}, [[1]], {"": None}]
NUMBERS = [2 ** 63, -2 ** 63, 2 ** 63 - 1, 2 ** 64, 2 ** 31, 2 ** 31 - 1, -2 ** 31 - 1, 10 ** 30, 10 ** 400,
           Raw("9" * 5000), Raw("-" + "1" * 4300), 1e308, -1e308, 5e-324, -0.0, float("nan"), float("inf"),
           float("-inf"), Raw("1e999"), Raw("-1e999"), 2.0000001, -2.0000001, 100.0, 101, -101, 0, 1, 2, 20, 21,
           128, 129, 248319, 248320, -2]
TEXTS = ["\ud800", "\udfff", "a\ud83d", "\udc00b", "\x00", "\ufeff", "\u202e", "e\u0301" * 500, "\U0001f600" * 100,
         "\uffff", "\U0010ffff", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<tool_call>", "</think>",
         "{{ 7*7 }}", "{% for x in y %}", "\n" * 500, " ", "\\", '"', "null", "Hi", "\u0000\u0001\u001f"]


def sizes(rng: random.Random):
    return rng.choice([lambda: "x" * rng.choice([1000, 30_000, 60_000, 70_000]),
                       lambda: ["s"] * rng.choice([17, 1000, 5000]),
                       lambda: list(range(rng.choice([100, 5000]))),
                       lambda: {str(i): 1 for i in range(rng.choice([10, 2000]))}])()


def hostile(rng: random.Random):
    kind = rng.choice(["types", "numbers", "texts", "nesting", "sizes"])
    if kind == "types":
        return rng.choice(TYPES)
    if kind == "numbers":
        return rng.choice(NUMBERS)
    if kind == "texts":
        return rng.choice(TEXTS)
    if kind == "nesting":
        return nested(rng.choice([2, 10, 63, 64, 65, 200, 999, 1000, 10_000]), rng)
    return sizes(rng)


def content(rng: random.Random):
    return rng.choice([
        lambda: "Hi",
        lambda: rng.choice(TEXTS),
        lambda: [{"type": "text", "text": rng.choice(TEXTS)}],
        lambda: [{"type": rng.choice(["text", "image_url", "video", "input_audio", "hologram", None, 7]),
                  rng.choice(["text", "image_url", "url"]): hostile(rng)}],
        lambda: [hostile(rng)],
        lambda: hostile(rng),
    ])()


def message(rng: random.Random):
    entry = {"role": rng.choice(["user", "user", "system", "assistant", "tool", "developer", "wizard", 3]),
             "content": content(rng)}
    if rng.random() < 0.2:
        entry[rng.choice(["name", "tool_calls", "tool_call_id", "reasoning_content"])] = hostile(rng)
    if rng.random() < 0.1:
        entry["tool_calls"] = [{"id": "c", "type": "function",
                                "function": {"name": rng.choice(["f", "", "x" * 100]), "arguments": hostile(rng)}}]
    return entry


def tool(rng: random.Random):
    return {"type": rng.choice(["function", "function", "code"]),
            "function": {"name": rng.choice(["get_weather", "f", "bad name", "", hostile(rng)]),
                         "description": rng.choice(["d", hostile(rng)]),
                         "parameters": rng.choice([{"type": "object", "properties": {"a": {"type": "string"}}},
                                                   hostile(rng)])}}


# In-range values, so that a good share of fuzzed requests reach the engine.
VALID = {
    "temperature": lambda rng: rng.uniform(0, 2), "top_p": lambda rng: rng.uniform(0.01, 1),
    "top_k": lambda rng: rng.choice([-1, 0, 1, 5, 2 ** 31 - 1]), "min_p": lambda rng: rng.uniform(0, 1),
    "presence_penalty": lambda rng: rng.uniform(-2, 2), "frequency_penalty": lambda rng: rng.uniform(-2, 2),
    "repetition_penalty": lambda rng: rng.uniform(0.1, 2), "seed": lambda rng: rng.randint(-2 ** 63, 2 ** 63 - 1),
    "n": lambda rng: rng.randint(1, 4), "stop": lambda rng: rng.choice(["x", ["the", "\n"]]),
    "stop_token_ids": lambda rng: [248046], "ignore_eos": lambda rng: rng.random() < 0.5,
    "max_tokens": lambda rng: rng.randint(1, 8), "stream": lambda rng: rng.random() < 0.5,
    "stream_options": lambda rng: {"include_usage": True}, "user": lambda rng: "someone",
    "return_token_ids": lambda rng: True, "logit_bias": lambda rng: {"5": rng.uniform(-100, 100)},
    "max_completion_tokens": lambda rng: rng.randint(1, 8), "enable_thinking": lambda rng: rng.random() < 0.5,
    "tool_choice": lambda rng: rng.choice(["auto", "none"]), "parallel_tool_calls": lambda rng: False,
    "chat_template_kwargs": lambda rng: {"enable_thinking": False}, "echo": lambda rng: rng.random() < 0.5,
    "messages": lambda rng: [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "prompt": lambda rng: rng.choice(["Once", ["a", "b", "c"]]), "model": lambda rng: SCRIPTED_NAME,
}


def value_for(field: str, rng: random.Random):
    """Mostly a hostile value; an in-range one where the field has one, a third of the time."""
    if field in VALID and rng.random() < 0.35:
        return VALID[field](rng)
    return hostile(rng)


SAMPLING = ["temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
            "seed", "n", "stop", "stop_token_ids", "ignore_eos", "skip_special_tokens", "max_tokens", "stream",
            "stream_options", "user", "return_token_ids", "logit_bias", "model"]
CHAT_ONLY = ["messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools", "tool_choice",
             "parallel_tool_calls", "response_format", "enable_thinking", "chat_template_kwargs", "mm_processor_kwargs"]
COMPLETION_ONLY = ["prompt", "logprobs", "echo", "suffix", "best_of"]


def request(rng: random.Random) -> tuple[str, dict]:
    """A valid small request with one to three fields replaced by hostile values."""
    stream = rng.random() < 0.3
    if rng.random() < 0.55:
        path = CHAT
        body = {"model": SCRIPTED_NAME, "messages": [message(rng) if rng.random() < 0.3 else
                                                     {"role": "user", "content": "Hi"}],
                "max_tokens": rng.randint(1, 8), "stream": stream, "enable_thinking": False}
        if rng.random() < 0.2:
            body["tools"] = [tool(rng)]
        fields = SAMPLING + CHAT_ONLY
    else:
        path = COMPLETIONS
        body = {"model": SCRIPTED_NAME, "prompt": rng.choice(["Hello", [1, 2, 3], ["a", "b"], [[5, 6]]]),
                "max_tokens": rng.randint(1, 8), "stream": stream}
        fields = SAMPLING + COMPLETION_ONLY
    for _ in range(rng.randint(0, 3)):
        field = rng.choice(fields)
        if field == "messages" and rng.random() < 0.5:
            body[field] = [message(rng) for _ in range(rng.choice([1, 2, 5, 300]))]
        elif field == "prompt" and rng.random() < 0.5:
            body[field] = rng.choice([[rng.choice(NUMBERS)], [rng.choice(TEXTS)], [[rng.choice(NUMBERS)]],
                                      ["Hello"] * rng.choice([2, 50])])
        elif field == "tools" and rng.random() < 0.5:
            body[field] = [tool(rng) for _ in range(rng.choice([1, 3, 40]))]
        elif field == "logit_bias" and rng.random() < 0.5:
            body[field] = {rng.choice(["1", "248319", "248320", "-1", "x", "\ud800", "1" * 30]): hostile(rng)}
        else:
            body[field] = value_for(field, rng)
    if rng.random() < 0.05:
        body[rng.choice(TEXTS)] = hostile(rng)  # an unknown, oddly named field
    if body.get("ignore_eos") is True and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 16:
        body["max_tokens"] = 16  # a valid long run to the context is not what this looks for, and slow
    return path, body


def _check_answer(response: httpx.Response, stream: bool) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    elif stream and response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        for event in events[:-1]:
            assert "error" not in json.loads(event), event
    else:
        assert response.json()["choices"]


def _five_hundreds(text: str) -> float:
    return sum(float(v) for v in re.findall(r'^qwen35_requests_total\{[^}]*status="5\d\d"\} (\S+)$', text, re.M))


def test_fuzzed_requests_never_get_a_5xx(scripted_server, server_log):
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=scripted_server.url, timeout=60) as client:
        failures_before = _five_hundreds(client.get("/metrics").text)
        for number in range(REQUESTS):
            path, body = request(rng)
            text = dump(body)
            response = client.post(path, content=text.encode("utf-8", "surrogatepass"),
                                   headers={"Content-Type": "application/json"})
            try:
                _check_answer(response, body.get("stream") is True)
            except (AssertionError, ValueError, KeyError) as failure:
                raise AssertionError(f"request {number} to {path}: {text[:600]}") from failure
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert _five_hundreds(client.get("/metrics").text) == failures_before
        assert statuses.get(200, 0) > REQUESTS // 10 and sum(v for k, v in statuses.items() if k >= 400) > REQUESTS // 2, \
            statuses
    errors = [record for record in server_log if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage()[:300] for record in errors]
    wait_for(lambda: scripted_server.engine.num_running == 0 and scripted_server.engine.num_waiting == 0,
             what="books empty after the fuzz")


def test_fuzzed_disconnects_mid_upload_and_mid_stream_never_get_a_5xx(scripted_server, server_log):
    rng = random.Random(SEED + 1)
    host, port = scripted_server.url.removeprefix("http://").split(":")
    failures_before = _five_hundreds(httpx.get(scripted_server.url + "/metrics").text)
    for _ in range(40):
        path, body = request(rng)
        payload = dump(body).encode("utf-8", "surrogatepass")
        head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            if rng.random() < 0.5:
                sock.sendall(head + payload[:rng.randint(0, max(0, len(payload) - 1))])  # leave mid-upload
            else:
                sock.sendall(head + payload)
                sock.recv(rng.choice([1, 200, 2000]))  # leave after the first bytes of the answer
    with httpx.Client(base_url=scripted_server.url, timeout=60) as client:
        wait_for(lambda: scripted_server.engine.num_running == 0 and scripted_server.engine.num_waiting == 0,
                 what="books empty after the disconnects")
        assert _five_hundreds(client.get("/metrics").text) == failures_before
        good = client.post(CHAT, json={"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": "Hi"}],
                                       "max_tokens": 20, "enable_thinking": False})
        assert good.json()["choices"][0]["message"]["content"] == "Hello from the script."
    errors = [record for record in server_log if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage()[:300] for record in errors]
