"""Structured outputs through the real `openai` client: json_schema / json_object response formats, the SDK's
`parse()`, required and named tool_choice, regex and choice, errors and metrics.

The demo model's random weights at temperature 1 cannot write JSON or a tool call by chance:
whatever comes out valid was made valid by the grammar. Random weights also never choose to
end a free string (one closing quote among 248K tokens), so the schemas here bound their
strings, numbers and lists, and a json_object ends when the grammar is closed for max_tokens;
the scripted server covers unbounded ones and exact text.
"""
import json
import re
from typing import Literal

import httpx
import jsonschema
import pytest
from openai import BadRequestError, OpenAI
from pydantic import BaseModel, Field

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.server.settings import ServerSettings
from server_harness import DEMO_NAME, SCRIPTED_NAME, metric, serving

TOOLS_CONTEXT = 2048  # the demo tokenizer is small, so a prompt listing tools runs long

NO_THINKING = {"enable_thinking": False}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colour": {"enum": ["red", "green", "blue"]},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
    },
    "required": ["name", "age", "colour"],
    "additionalProperties": False,
}
BOUNDED_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city.", "parameters": {
        "type": "object", "required": ["city", "days"], "properties": {
            "city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {"name": "set_alarm", "parameters": {
        "type": "object", "required": ["hour"], "properties": {
            "hour": {"type": "integer", "minimum": 0, "maximum": 23}, "loud": {"type": "boolean"}}}}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in BOUNDED_TOOLS}
USER = [{"role": "user", "content": "Tell me about someone."}]


class Pet(BaseModel):
    name: str = Field(max_length=8)
    kind: Literal["cat", "dog", "fish"]
    legs: int = Field(ge=0, le=4)


@pytest.fixture(scope="module")
def demo(demo_server):
    return OpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def tools_demo(demo_path, demo_tokenizer):
    """The demo model with room for prompts that list tools."""
    config = EngineConfig(max_running_requests=4, max_model_len=TOOLS_CONTEXT, prefill_chunk_size=256)
    runner = build_runner(load_model(demo_path, progress=False), config)[0]
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    settings = ServerSettings(served_model_names=[DEMO_NAME], max_model_len=TOOLS_CONTEXT, model_root=str(demo_path),
                              request_timeout=300.0)
    with serving(engine, demo_tokenizer, settings) as server:
        yield OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def scripted(scripted_server):
    return OpenAI(base_url=scripted_server.v1, api_key="unused", max_retries=0, timeout=120)


def person_format(strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": strict}}


def test_json_schema_outputs_validate_in_every_seeded_run(demo):
    contents = []
    for request in range(5):  # 5 requests x 4 choices (seeds seed + index): 20 seeded runs, seeds 0..19
        reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, temperature=1.0, seed=4 * request, n=4,
                                             max_tokens=120, response_format=person_format(strict=request % 2 == 0),
                                             extra_body=NO_THINKING)
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice.message.content
            contents.append(choice.message.content)
    for content in contents:
        jsonschema.validate(json.loads(content), PERSON)
    assert len(set(contents)) > 10  # sampled, not one forced answer


def test_parse_with_a_pydantic_model(demo):
    completion = demo.chat.completions.parse(model=DEMO_NAME, messages=USER, response_format=Pet, temperature=1.0,
                                             seed=7, max_tokens=80, extra_body=NO_THINKING)
    pet = completion.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish") and 0 <= pet.legs <= 4


def test_streamed_text_equals_non_streamed_at_temperature_zero(demo):
    request = dict(model=DEMO_NAME, messages=USER, temperature=0.0, max_tokens=120, response_format=person_format(),
                   extra_body=NO_THINKING)
    whole = demo.chat.completions.create(**request).choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in demo.chat.completions.create(
        stream=True, **request) if chunk.choices)
    assert streamed == whole
    jsonschema.validate(json.loads(whole), PERSON)


def test_json_object_gives_an_object(demo, scripted):
    reply = scripted.chat.completions.create(model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[json]"}],
                                             response_format={"type": "json_object"}, extra_body=NO_THINKING)
    assert json.loads(reply.choices[0].message.content) == {"answer": 42, "items": ["a", "b"]}
    # Random weights open strings they never close: max_tokens comes first, and the grammar is closed in
    # the last tokens before it, so the cut answer is still an object (finish_reason "length" says it was cut).
    finishes = set()
    for seed in range(20):
        reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, temperature=1.0, seed=seed,
                                             max_tokens=24, response_format={"type": "json_object"},
                                             extra_body=NO_THINKING)
        assert isinstance(json.loads(reply.choices[0].message.content), dict), reply.choices[0].message.content
        finishes.add(reply.choices[0].finish_reason)
    assert "length" in finishes and finishes <= {"length", "stop"}


def tool_calls_of(reply):
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    assert not (choice.message.content or "").strip()
    return [(call.function.name, json.loads(call.function.arguments)) for call in choice.message.tool_calls]


def test_required_tool_choice_calls_with_valid_arguments(tools_demo):
    names = set()
    for seed in range(4):
        reply = tools_demo.chat.completions.create(model=DEMO_NAME, messages=USER, tools=BOUNDED_TOOLS,
                                                   tool_choice="required", temperature=1.0, seed=seed, max_tokens=800,
                                                   parallel_tool_calls=seed % 2 == 0, extra_body=NO_THINKING)
        calls = tool_calls_of(reply)
        assert calls and (seed % 2 == 0 or len(calls) == 1)
        for name, arguments in calls:
            jsonschema.validate(arguments, SCHEMAS[name])
            names.add(name)
    assert names == set(SCHEMAS)


def test_named_tool_choice_calls_that_tool(tools_demo):
    for seed, stream in ((0, False), (1, True)):
        request = dict(model=DEMO_NAME, messages=USER, tools=BOUNDED_TOOLS, temperature=1.0, seed=seed,
                       tool_choice={"type": "function", "function": {"name": "set_alarm"}}, max_tokens=80,
                       extra_body=NO_THINKING)
        if not stream:
            ((name, arguments),) = tool_calls_of(tools_demo.chat.completions.create(**request))
        else:
            chunks = [c for c in tools_demo.chat.completions.create(stream=True, **request) if c.choices]
            deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
            name = deltas[0].function.name
            arguments = json.loads("".join(d.function.arguments or "" for d in deltas))
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert name == "set_alarm"
        jsonschema.validate(arguments, SCHEMAS["set_alarm"])


@pytest.mark.parametrize("extra, check", [
    ({"choice": ["north", "south", "east"]}, lambda text: text in ("north", "south", "east")),
    ({"structured_outputs": {"choice": ["yes", "no"], "regex": None, "json": None}}, lambda text: text in ("yes", "no")),
    ({"regex": r"[A-Z]{2}-[0-9]{4}"}, lambda text: re.fullmatch(r"[A-Z]{2}-[0-9]{4}", text)),
    ({"structured_outputs": {"json": json.dumps({"type": "integer", "minimum": 5, "maximum": 9})}},
     lambda text: 5 <= json.loads(text) <= 9),
    ({"structured_outputs": {"grammar": 'root ::= "go " dir\ndir ::= "left" | "right" | [0-9]{2}'}},  # GBNF (vLLM)
     lambda text: re.fullmatch(r"go (left|right|[0-9]{2})", text)),
    ({"ebnf": 'start: "at " NUM "h"\nNUM: /[0-9]{1,2}/'}, lambda text: re.fullmatch(r"at [0-9]{1,2}h", text)),  # Lark
    # vLLM's options beside the constraint: closed objects (a schema that allows any extra key would
    # let the noise add some), and the no-ops.
    ({"structured_outputs": {"json": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
                             "disable_additional_properties": True, "disable_any_whitespace": True}},
     lambda text: json.loads(text) in ({"ok": True}, {"ok": False})),
])
def test_choice_regex_and_structured_outputs(demo, extra, check):
    for seed in range(3):
        reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, temperature=1.0, seed=seed,
                                             max_tokens=40, extra_body={**NO_THINKING, **extra})
        assert reply.choices[0].finish_reason == "stop" and check(reply.choices[0].message.content)


def test_json_object_and_structural_tags_as_vllm_and_sglang_take_them(demo):
    reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, temperature=1.0, seed=5, max_tokens=24,
                                         extra_body={**NO_THINKING, "structured_outputs": {"json_object": True}})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    tag = {"type": "structural_tag", "triggers": ["<function="], "structures": [
        {"begin": "<function=set_alarm>", "end": "</function>", "schema": SCHEMAS["set_alarm"]}]}
    # Noise seldom writes the trigger: the answer is free text, and any structure in it is a valid one.
    for extra in ({"response_format": tag}, {"structured_outputs": {"structural_tag": json.dumps(tag)}}):
        reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, temperature=1.0, seed=5, max_tokens=16,
                                             extra_body={**NO_THINKING, **extra})
        text = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "length" and text
        for body in re.findall(r"<function=set_alarm>(.*?)</function>", text, re.S):
            jsonschema.validate(json.loads(body), SCHEMAS["set_alarm"])


def test_closing_objects_leaves_names_and_values_alone():
    from qwen35.runtime.server.structured_outputs import _closed

    schema = {"type": "object", "properties": {"properties": {"type": "object", "properties": {"a": {}}},
                                                "mode": {"enum": [{"properties": {}}]}},
              "$defs": {"item": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
    assert _closed(schema) == {
        "type": "object", "additionalProperties": False,
        "properties": {"properties": {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
                       "mode": {"enum": [{"properties": {}}]}},
        "$defs": {"item": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False}}}


def test_completions_take_constraints_too(demo):
    reply = demo.completions.create(model=DEMO_NAME, prompt="The code is", temperature=1.0, seed=3, max_tokens=20,
                                    extra_body={"regex": r" [0-9]{3}"})
    assert re.fullmatch(r" [0-9]{3}", reply.choices[0].text) and reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "objekt"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "strict": True, "schema": {"type": "string", "format": "shoe-size"}}}},
     "response_format.json_schema.schema", "shoe-size"),
    ({"regex": "(unclosed"}, "regex", "unclosed group"),
    ({"choice": []}, "choice", "non-empty list"),
    ({"structured_outputs": {"whitespace_pattern": " *", "json": None}}, "structured_outputs", "names no constraint"),
    ({"structured_outputs": {"ebnf": "root ::= x"}}, "structured_outputs.ebnf", "not supported"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs.json_object", "must be true"),
    ({"response_format": {"type": "structural_tag", "format": {"type": "triggered_tags"}}},
     "response_format.format", "not supported"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag.triggers", "non-empty"),
    ({"response_format": {"type": "structural_tag", "triggers": ["<f"], "structures": [
        {"begin": "<g>", "end": "</g>", "schema": {}}]}}, "response_format.structures[0]", "none of the triggers"),
    ({"structured_outputs": {"grammar": "root ::= missing"}}, "structured_outputs.grammar", "missing"),
    ({"ebnf": "start: (unclosed"}, "ebnf", "cannot be used"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json", "not valid JSON"),
    ({"regex": "a+", "choice": ["a"]}, "choice", "constrains its output twice"),
])
def test_bad_constraints_answer_400_and_the_server_keeps_serving(demo, extra, param, words):
    with pytest.raises(BadRequestError) as caught:
        demo.chat.completions.create(model=DEMO_NAME, messages=USER, max_tokens=4, extra_body=extra)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
    reply = demo.chat.completions.create(model=DEMO_NAME, messages=USER, max_tokens=2, extra_body=NO_THINKING)
    assert reply.choices[0].finish_reason == "length"


def test_json_format_and_a_forced_tool_call_conflict(tools_demo):
    with pytest.raises(BadRequestError) as caught:
        tools_demo.chat.completions.create(model=DEMO_NAME, messages=USER, tools=BOUNDED_TOOLS, tool_choice="required",
                                           response_format={"type": "json_object"}, max_tokens=4)
    assert caught.value.body["param"] == "tool_choice" and "twice" in caught.value.body["message"]


def test_compile_time_and_cache_hits_in_metrics(demo_server, demo):
    for _ in range(2):
        demo.chat.completions.create(model=DEMO_NAME, messages=USER, max_tokens=8, extra_body={
            **NO_THINKING, "regex": "metrics-[a-z]{3}"})
    text = httpx.get(demo_server.url + "/metrics").text
    assert metric(text, "qwen35_grammar_compile_seconds_count") >= 1
    assert metric(text, "qwen35_grammar_compile_seconds_sum") > 0
    assert metric(text, "qwen35_grammar_cache_hits_total") >= 1
