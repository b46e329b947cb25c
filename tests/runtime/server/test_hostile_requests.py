"""Requests built to break the server: every numeric field at and past its range, lone surrogates,
deep nesting, huge integers, logit_bias and impossible batches. Each gets a 4xx naming what was
wrong (never a 5xx), nothing reaches the engine step, and good requests keep being answered."""
import json
import re

import httpx
import pytest

from server_harness import DEMO_NAME, SCRIPTED_NAME

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hi"}]
HUGE = 2 ** 63  # one past int64: what crashed the sampler's tensors


def chat(**fields):
    return {"model": SCRIPTED_NAME, "messages": USER, "max_tokens": 4, "enable_thinking": False, **fields}


def completion(**fields):
    return {"model": SCRIPTED_NAME, "prompt": "Hello", "max_tokens": 4, **fields}


@pytest.fixture(scope="module")
def http(scripted_server):
    with httpx.Client(base_url=scripted_server.url, timeout=60) as client:
        yield client


def server_errors(http) -> float:
    """How many 5xx answers the server has counted so far (any endpoint)."""
    pattern = re.compile(r'^qwen35_requests_total\{endpoint="[^"]*",status="5\d\d"\} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(http.get("/metrics").text))


def _post_raw(http, path: str, text: str | bytes):
    return http.post(path, content=text.encode("utf-8") if isinstance(text, str) else text,
                     headers={"Content-Type": "application/json"})


def _error(response, status=400):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# (endpoint, field, value): every one is out of range or past what the engine's tensors hold.
OUT_OF_RANGE = [
    (CHAT, "top_k", HUGE), (CHAT, "top_k", 2 ** 31), (CHAT, "top_k", -2), (CHAT, "top_k", -HUGE),
    (CHAT, "temperature", 1e308), (CHAT, "temperature", -1e-9), (CHAT, "temperature", HUGE),
    (CHAT, "top_p", 1.0000001), (CHAT, "top_p", -1e308), (CHAT, "min_p", 1e308), (CHAT, "min_p", -0.5),
    (CHAT, "presence_penalty", 1e308), (CHAT, "frequency_penalty", -1e308),
    (CHAT, "repetition_penalty", 1e308), (CHAT, "repetition_penalty", -1.0),
    (CHAT, "seed", HUGE), (CHAT, "seed", -HUGE - 1), (CHAT, "seed", 10 ** 4000),
    (CHAT, "n", HUGE), (CHAT, "n", -HUGE), (CHAT, "max_tokens", HUGE), (CHAT, "max_tokens", -HUGE),
    (CHAT, "max_completion_tokens", HUGE), (CHAT, "top_logprobs", HUGE),
    (CHAT, "stop_token_ids", [HUGE]), (CHAT, "stop_token_ids", [-1]), (CHAT, "stop_token_ids", [248320]),
    (CHAT, "stop", ["x"] * 17), (CHAT, "stop", ["x" * 257]),
    (CHAT, "logit_bias", {"5": 100.5}), (CHAT, "logit_bias", {"5": -1e308}), (CHAT, "logit_bias", {"5": HUGE}),
    (CHAT, "logit_bias", {str(HUGE): 1}), (CHAT, "logit_bias", {"248320": 1}), (CHAT, "logit_bias", {"-1": 1}),
    (CHAT, "logit_bias", {"five": 1}), (CHAT, "logit_bias", {"\u0665": 1}),
    (CHAT, "logit_bias", {str(i): 1 for i in range(1025)}),
    (COMPLETIONS, "top_k", HUGE), (COMPLETIONS, "logprobs", HUGE), (COMPLETIONS, "logprobs", -1),
    (COMPLETIONS, "best_of", HUGE), (COMPLETIONS, "seed", HUGE), (COMPLETIONS, "n", HUGE),
    (COMPLETIONS, "max_tokens", HUGE), (COMPLETIONS, "logit_bias", {"1": 101}),
]


@pytest.mark.parametrize("path, field, value", OUT_OF_RANGE,
                         ids=[f"{'chat' if p == CHAT else 'completions'}-{f}-{str(v)[:12]}" for p, f, v in OUT_OF_RANGE])
def test_every_numeric_field_is_range_checked_at_the_boundary(http, path, field, value):
    body = chat(**{field: value}) if path == CHAT else completion(**{field: value})
    if field == "top_logprobs":
        body["logprobs"] = True
    error = _error(_post_raw(http, path, json.dumps(body)))
    assert error["param"] == field, error
    assert len(error["message"]) < 400, "a huge value is not echoed back whole"


def test_top_k_past_int64_no_longer_fails_a_batch_it_shares(http, scripted_server):
    """The original report: top_k 2**63 crashed the engine step and every request batched with it."""
    steps = scripted_server.engine.engine.steps
    failures = server_errors(http)
    long_stream = chat(stream=True, max_tokens=60, messages=[{"role": "user", "content": "[long]"}])
    with http.stream("POST", CHAT, json=long_stream) as stream:
        refused = http.post(CHAT, json=chat(top_k=HUGE, temperature=1.0))
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert _error(refused)["param"] == "top_k"
    assert events[-1] == "data: [DONE]" and "error" not in "".join(events)
    assert server_errors(http) == failures and scripted_server.engine.engine.steps > steps


@pytest.mark.parametrize("field, value", [("top_k", 2 ** 31 - 1), ("seed", 2 ** 63 - 1), ("seed", -2 ** 63),
                                          ("logit_bias", {"248319": 0.0, "0": -100})])
def test_the_ends_of_every_range_are_served(http, field, value):
    response = http.post(CHAT, json=chat(**{field: value}, temperature=1.0, max_tokens=20))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the script."


# (where the surrogate sits, body with it): every text field of both endpoints.
SURROGATE = "\ud800"
SURROGATES = [
    ("messages[0].content", chat(messages=[{"role": "user", "content": "a" + SURROGATE}])),
    ("messages[0].content[0].text", chat(messages=[{"role": "user", "content": [{"type": "text",
                                                                                 "text": SURROGATE}]}])),
    ("messages[0].name", chat(messages=[{"role": "user", "content": "hi", "name": SURROGATE}])),
    ("model", chat(model=SURROGATE)),
    ("stop", chat(stop=SURROGATE)),
    ("stop[1]", chat(stop=["ok", "\udfff"])),
    ("user", chat(user="x\udc80y")),
    ("tools[0].function.description", chat(tools=[{"type": "function", "function": {
        "name": "f", "description": SURROGATE}}])),
    ("chat_template_kwargs." + SURROGATE, chat(chat_template_kwargs={SURROGATE: 1})),
    ("prompt", completion(prompt=SURROGATE)),
    ("prompt[1]", completion(prompt=["fine", "bad" + SURROGATE])),
    ("logit_bias." + SURROGATE, completion(logit_bias={SURROGATE: 1})),
]


@pytest.mark.parametrize("where, body", SURROGATES, ids=[s[0].encode("ascii", "replace").decode()
                                                         for s in SURROGATES])
def test_a_lone_surrogate_in_any_text_field_is_a_400(http, where, body):
    path = COMPLETIONS if "prompt" in body else CHAT
    error = _error(_post_raw(http, path, json.dumps(body)))  # ensure_ascii writes the "\ud800" escape
    assert error["code"] == "invalid_unicode" and "surrogate" in error["message"], error
    assert error["param"] == where.encode("utf-8", "backslashreplace").decode(), error


def test_invalid_utf8_and_non_json_numbers_are_400s(http):
    assert _error(_post_raw(http, CHAT, b'{"model": "\xff"}'))["code"] == "invalid_json"
    # json.loads decodes bytes with surrogatepass: a UTF-8-encoded surrogate arrives as one.
    assert _error(_post_raw(http, CHAT, b'{"model": "\xed\xa0\x80"}'))["code"] == "invalid_unicode"
    for constant in ("NaN", "Infinity", "-Infinity"):
        error = _error(_post_raw(http, CHAT, json.dumps(chat()).replace('"max_tokens": 4',
                                                                       f'"temperature": {constant}')))
        assert error["code"] == "invalid_json" and constant.lstrip("-") in error["message"], error


@pytest.mark.parametrize("depth", [65, 1000, 10_000])
def test_deep_nesting_is_a_400(http, depth):
    nested = "[" * depth + "]" * depth
    body = json.dumps(chat(chat_template_kwargs={"x": "PLACEHOLDER"})).replace('"PLACEHOLDER"', nested)
    error = _error(_post_raw(http, CHAT, body))
    assert error["code"] == "invalid_json" and "nests deeper than 64 levels" in error["message"], error
    top = _error(_post_raw(http, CHAT, "[" * depth + "]" * depth))
    assert top["code"] == "invalid_json"


def test_nesting_a_tool_schema_needs_is_served(http):
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}
    for _ in range(12):
        schema = {"type": "object", "properties": {"inner": schema}}
    response = http.post(CHAT, json=chat(tools=[{"type": "function", "function": {"name": "f",
                                                                                  "parameters": schema}}]))
    assert response.status_code == 200, response.text


def test_an_integer_of_5000_digits_is_a_400(http):
    body = json.dumps(chat()).replace('"max_tokens": 4', '"max_tokens": ' + "9" * 5000)
    error = _error(_post_raw(http, CHAT, body))
    assert error["code"] == "invalid_json" and "4300 digits" in error["message"], error
    inside = json.dumps(chat(chat_template_kwargs={"x": "N"})).replace('"N"', "1" * 5000)
    assert _error(_post_raw(http, CHAT, inside))["code"] == "invalid_json"


def test_more_prompts_than_the_server_can_ever_hold_is_a_400_not_a_503(http, scripted_server):
    config = scripted_server.engine.config
    capacity = config.max_running_requests + config.max_queue
    response = http.post(COMPLETIONS, json=completion(prompt=["Hello"] * (capacity + 1)))
    error = _error(response)
    assert error["param"] == "prompt" and error["code"] == "too_many_sequences", error
    assert f"at most {capacity}" in error["message"] and "retry-after" not in response.headers
    doubled = _error(http.post(COMPLETIONS, json=completion(prompt=["Hello"] * (capacity // 2 + 1), n=2)))
    assert doubled["code"] == "too_many_sequences"
    fits = http.post(COMPLETIONS, json=completion(prompt=["Hello"] * 3))
    assert fits.status_code == 200 and len(fits.json()["choices"]) == 3


def test_logit_bias_is_honoured(demo_server, demo_tokenizer):
    """On the demo model's random weights: -100 moves the greedy token away, +100 forces a token,
    greedy or sampled, while the logprobs stay the model's raw ones."""
    def tokens(**fields):
        body = {"model": DEMO_NAME, "prompt": "Once upon a time", "max_tokens": 3, "return_token_ids": True, **fields}
        response = httpx.post(demo_server.url + COMPLETIONS, json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["token_ids"]

    first = tokens(temperature=0.0)[0]
    forced = demo_tokenizer.encode(" banana")[0]
    assert forced != first
    for temperature in (0.0, 1.0):
        assert tokens(temperature=temperature, logit_bias={str(first): -100})[0] != first
        assert tokens(temperature=temperature, logit_bias={str(forced): 100}) == [forced] * 3


def test_template_variables_named_like_render_parameters_are_served(http):
    """chat_template_kwargs {"self": 1} collided with ChatTemplate.render's own parameter: a 500."""
    for kwargs in ({"self": 1}, {"namespace_": [1]}, {"": 1}):
        response = http.post(CHAT, json=chat(chat_template_kwargs=kwargs, max_tokens=20))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Hello from the script."
