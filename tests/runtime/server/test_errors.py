"""A battery of bad requests: each gets OpenAI's error shape, the right status, param and message,
and the server keeps answering good requests afterwards."""
import json

import httpx
import pytest
from openai import OpenAI

from server_harness import API_KEY, DEMO_NAME, SCRIPTED_NAME, metric

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def chat(**fields):
    return {"model": SCRIPTED_NAME, "messages": USER, "max_tokens": 4, **fields}


def completion(**fields):
    return {"model": SCRIPTED_NAME, "prompt": "Hello", "max_tokens": 4, **fields}


def _tool(**function):
    return {"type": "function", "function": {"name": "get_weather", **function}}


# (id, path, body: dict | bytes, status, param or None, fragment of the message)
CASES = [
    ("malformed-json", CHAT, b'{"model": "x", "messages": [', 400, None, "not valid JSON"),
    ("json-array-body", CHAT, b"[1, 2]", 400, None, "must be a JSON object"),
    ("empty-body", CHAT, b"", 400, None, "body is empty"),
    ("missing-messages", CHAT, {"model": SCRIPTED_NAME}, 400, "messages", "Missing required parameter"),
    ("empty-messages", CHAT, chat(messages=[]), 400, "messages", "at least 1"),
    ("messages-not-list", CHAT, chat(messages="hello"), 400, "messages", "valid list"),
    ("message-without-role", CHAT, chat(messages=[{"content": "hi"}]), 400, "messages[0].role", "Missing"),
    ("unknown-role", CHAT, chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role", "wizard"),
    ("temperature-string", CHAT, chat(temperature="hot"), 400, "temperature", "valid number"),
    ("temperature-range", CHAT, chat(temperature=3.5), 400, "temperature", "[0, 2]"),
    ("top-p-zero", CHAT, chat(top_p=0), 400, "top_p", "(0, 1]"),
    ("top-k-float", CHAT, chat(top_k=1.5), 400, "top_k", "valid integer"),
    ("min-p-range", CHAT, chat(min_p=2), 400, "min_p", "[0, 1]"),
    ("presence-range", CHAT, chat(presence_penalty=5), 400, "presence_penalty", "[-2, 2]"),
    ("frequency-range", CHAT, chat(frequency_penalty=-3), 400, "frequency_penalty", "[-2, 2]"),
    ("repetition-zero", CHAT, chat(repetition_penalty=0), 400, "repetition_penalty", "(0, 2]"),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), 400, "max_tokens", "at least 1"),
    ("max-completion-negative", CHAT, chat(max_completion_tokens=-2), 400, "max_completion_tokens", "at least 1"),
    ("max-tokens-beyond-context", CHAT, chat(max_tokens=5000), 400, "max_tokens", "maximum context length"),
    ("prompt-beyond-context", COMPLETIONS, completion(prompt="word " * 3000), 400, "prompt",
     "maximum context length"),
    ("n-too-large", CHAT, chat(n=5), 400, "n", "between 1 and 4"),
    ("n-zero", COMPLETIONS, completion(n=0), 400, "n", "between 1 and 4"),
    ("top-logprobs-range", CHAT, chat(logprobs=True, top_logprobs=25), 400, "top_logprobs", "[0, 20]"),
    ("top-logprobs-without-logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs", "'logprobs': true"),
    ("completion-logprobs-range", COMPLETIONS, completion(logprobs=21), 400, "logprobs", "[0, 20]"),
    ("unknown-model", CHAT, chat(model="gpt-17"), 404, "model", "does not exist"),
    ("stream-not-bool", CHAT, chat(stream="yes"), 400, "stream", "valid boolean"),
    ("stop-not-strings", CHAT, chat(stop=["ok", 3]), 400, "stop", "accepted types"),
    ("seed-string", CHAT, chat(seed="seven"), 400, "seed", "valid integer"),
    ("tool-schema-not-object", CHAT, chat(tools=[_tool(parameters={"type": "string"})]), 400,
     "tools[0].function.parameters", "top-level type must be 'object'"),
    ("tool-properties-broken", CHAT, chat(tools=[_tool(parameters={"type": "object", "properties": ["city"]})]), 400,
     "tools[0].function.parameters.properties", "schema object"),
    ("tool-required-unknown", CHAT, chat(tools=[_tool(parameters={"type": "object", "properties": {},
                                                                  "required": ["city"]})]), 400,
     "tools[0].function.parameters.required", "not in 'properties'"),
    ("tool-parameters-not-dict", CHAT, chat(tools=[_tool(parameters="city")]), 400,
     "tools[0].function.parameters", "valid dictionary"),
    ("tool-name-invalid", CHAT, chat(tools=[{"type": "function", "function": {"name": "get weather!"}}]), 400,
     "tools[0].function.name", "1-64 letters"),
    ("tool-duplicate", CHAT, chat(tools=[TOOL, TOOL]), 400, "tools[1].function.name", "defined twice"),
    ("tool-choice-unknown", CHAT, chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "x"}}),
     400, "tool_choice.function.name", "not in 'tools'"),
    ("tool-choice-required-no-tools", CHAT, chat(tool_choice="required"), 400, "tool_choice", "non-empty 'tools'"),
    ("tool-choice-bad-string", CHAT, chat(tools=[TOOL], tool_choice="always"), 400, "tool_choice", "accepted types"),
    ("image-part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]), 400,
     "messages[0].content[1]", "text model only"),
    ("unknown-part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), 400,
     "messages[0].content[0]", "unknown content part"),
    ("bad-tool-arguments", CHAT, chat(messages=[*USER, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{city:"}}]}]), 400,
     "messages[1].tool_calls[0].function.arguments", "JSON object"),
    ("tool-calls-on-user", CHAT, chat(messages=[{"role": "user", "content": "x", "tool_calls": [
        {"function": {"name": "f", "arguments": "{}"}}]}]), 400, "messages[0].tool_calls", "only allowed"),
    ("response-format-json-schema", CHAT, chat(response_format={"type": "json_schema"}), 400,
     "response_format.json_schema", "is required"),
    ("template-kwargs-reserved", CHAT, chat(chat_template_kwargs={"messages": []}), 400, "chat_template_kwargs",
     "set by the server"),
    ("stream-options-type", CHAT, chat(stream=True, stream_options={"include_usage": "yes"}), 400,
     "stream_options.include_usage", "valid boolean"),
    ("prompt-token-out-of-range", COMPLETIONS, completion(prompt=[1, 2, 999999]), 400, "prompt", "outside"),
    ("prompt-empty", COMPLETIONS, completion(prompt=""), 400, "prompt", "no tokens"),
    ("prompt-wrong-type", COMPLETIONS, completion(prompt={"text": "hi"}), 400, "prompt", "accepted types"),
    ("suffix-unsupported", COMPLETIONS, completion(suffix="end"), 400, "suffix", "not supported"),
    ("oversized-body", CHAT, chat(messages=[{"role": "user", "content": "x" * 70_000}]), 413, None,
     "at most 65536"),
]


@pytest.fixture(scope="module")
def http(scripted_server):
    with httpx.Client(base_url=scripted_server.url, timeout=60) as client:
        yield client


def _send(http, path, body):
    if isinstance(body, bytes):
        return http.post(path, content=body, headers={"Content-Type": "application/json"})
    return http.post(path, json=body)


def _error(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize("name, path, body, status, param, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_the_right_error(http, name, path, body, status, param, fragment):
    response = _send(http, path, body)
    assert response.status_code == status, response.text
    error = _error(response)
    assert fragment in error["message"], error
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_battery_is_large_and_the_server_keeps_serving(http, scripted_server):
    assert len(CASES) >= 25
    for name, path, body, status, _, _ in CASES[:10]:
        assert _send(http, path, body).status_code == status, name
    good = http.post(CHAT, json=chat(max_tokens=50, enable_thinking=False))
    assert good.status_code == 200
    assert good.json()["choices"][0]["message"]["content"] == "Hello from the script."
    scrape = http.get("/metrics").text
    assert 'qwen35_requests_total{endpoint="/v1/chat/completions",status="400"}' in scrape
    assert metric(scrape, "qwen35_running_requests") == 0 and metric(scrape, "qwen35_waiting_requests") == 0


def test_unknown_routes_and_methods_use_the_error_shape(http):
    missing = http.get("/v1/nothing-here")
    assert missing.status_code == 404 and _error(missing)["code"] == "not_found"
    wrong_method = http.get(CHAT)
    assert wrong_method.status_code == 405 and "Method Not Allowed" in _error(wrong_method)["message"]


def test_api_key_is_required_and_checked(tight_server):
    with httpx.Client(base_url=tight_server.url, timeout=60) as client:
        body = chat(enable_thinking=False)
        missing = client.post(CHAT, json=body)
        assert missing.status_code == 401 and "Missing API key" in _error(missing)["message"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post(CHAT, json=body, headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and _error(wrong)["code"] == "invalid_api_key"
        assert client.get("/health").status_code == 200, "probes need no key"
        assert client.get("/metrics").status_code == 200
    reply = OpenAI(base_url=tight_server.v1, api_key=API_KEY, max_retries=0).chat.completions.create(
        model=SCRIPTED_NAME, messages=USER, extra_body={"enable_thinking": False})
    assert reply.choices[0].message.content == "Hello from the script."


def test_context_errors_on_the_demo_model(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=60) as client:
        long_chat = {"model": DEMO_NAME, "messages": [{"role": "user", "content": "word " * 400}]}
        response = client.post(CHAT, content=json.dumps(long_chat), headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        error = _error(response)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "256 tokens" in error["message"]
