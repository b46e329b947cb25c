"""Reasoning and qwen3_coder tool-call parsers: whole text and every way of splitting it agree."""
import json
import random

import pytest

from qwen35.runtime.server.parsers.arguments import convert_parameter, schema_types
from qwen35.runtime.server.parsers.reasoning import ReasoningParser, prompt_opens_reasoning
from qwen35.runtime.server.parsers.tool_calls import ToolCallParser

WEATHER_TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "ratio": {"type": "number"},
                "metric": {"type": "boolean"},
                "options": {"type": "object"},
                "hours": {"type": "array"},
                "note": {"type": ["string", "null"]},
                "nothing": {"type": "null"},
                "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            },
        },
    },
}, {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]


def _pieces(text: str, seed: int) -> list[str]:
    """Split text at random points (including single characters and empty pieces)."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text), rng.randint(1, 40))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _run_reasoning(text: str, starts_in_reasoning: bool, pieces: list[str]) -> tuple[str, str]:
    parser = ReasoningParser(starts_in_reasoning)
    reasoning = content = ""
    for piece in pieces:
        delta = parser.feed(piece)
        reasoning, content = reasoning + delta.reasoning, content + delta.content
    tail = parser.flush()
    return reasoning + tail.reasoning, content + tail.content


@pytest.mark.parametrize("text, starts, want", [
    ("Let me think.\nStep two.\n</think>\n\nThe answer is 4.", True, ("Let me think.\nStep two.", "The answer is 4.")),
    ("The answer is 4.", False, ("", "The answer is 4.")),
    ("<think>\nhmm\n</think>\n\nFour.", False, ("hmm", "Four.")),
    ("Four. <think>not reasoning</think>", False, ("", "Four. <think>not reasoning</think>")),
    ("still thinking when cut off", True, ("still thinking when cut off", "")),
    ("  \n</think>\n\nonly answer", True, ("", "only answer")),
    ("a < b and </thin is not an end</think>x", True, ("a < b and </thin is not an end", "x")),
    ("<thi", False, ("", "<thi")),
])
def test_reasoning_split_is_the_same_however_the_text_streams(text, starts, want):
    assert _run_reasoning(text, starts, [text]) == want
    for seed in range(30):
        assert _run_reasoning(text, starts, _pieces(text, seed)) == want, seed


def test_prompt_opens_reasoning_reads_the_generation_prompt():
    on = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    off = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert prompt_opens_reasoning(on) and not prompt_opens_reasoning(off)
    # A <think> the user typed earlier is not the assistant's open block.
    assert not prompt_opens_reasoning("<|im_start|>user\n<think><|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("raw, schema, want", [
    ("\nParis\n", {"type": "string"}, "Paris"),
    ("\n42\n", {"type": "integer"}, 42),
    ("\n3.0\n", {"type": "integer"}, 3),
    ("\nthree\n", {"type": "integer"}, "three"),
    ("\n2.5\n", {"type": "number"}, 2.5),
    ("\n7\n", {"type": "number"}, 7),
    ("\nTrue\n", {"type": "boolean"}, True),
    ("\nfalse\n", {"type": "boolean"}, False),
    ('\n{"a": [1, 2]}\n', {"type": "object"}, {"a": [1, 2]}),
    ("\n[1, 2]\n", {"type": "array"}, [1, 2]),
    ("\nnull\n", {"type": ["string", "null"]}, None),
    ("\nnull\n", {"type": "string"}, "null"),
    ("\nnull\n", {"type": "null"}, None),
    ("\n12\n", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, 12),
    ("\ntwelve\n", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "twelve"),
    ("\nline one\nline two\n", None, "line one\nline two"),
    ('\n{"k": 1}\n', None, {"k": 1}),
    ("\nnan\n", {"type": "number"}, "nan"),
    # What the tool-call grammar writes reads back as the schema's own value.
    ("\n1\n", {"enum": [1, 2]}, 1),
    ("\nred\n", {"enum": ["red", 1]}, "red"),
    ('\n{"a": 1}\n', {"const": {"a": 1}}, {"a": 1}),
    ("\ntrue\n", {"anyOf": [{"enum": ["x"]}, {"const": True}]}, True),
    ("\n12345\n", {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]}, 12345),
    ("\nab\n", {"type": ["string", "integer"]}, "ab"),
])
def test_parameter_values_are_typed_by_the_schema(raw, schema, want):
    assert convert_parameter(raw, schema) == want


def test_schema_types_flattens_unions():
    assert schema_types({"type": ["integer", "null"]}) == ["integer", "null"]
    assert schema_types({"oneOf": [{"type": "string"}, {"type": "object"}]}) == ["string", "object"]
    assert schema_types({"enum": ["a", "b"]}) == ["enum"]


def _run_tools(pieces: list[str], tools=WEATHER_TOOLS):
    parser = ToolCallParser(tools)
    content, deltas = "", []
    for piece in pieces:
        out = parser.feed(piece)
        content += out.content
        deltas += out.tool_calls
    out = parser.flush()
    return parser, content + out.content, deltas + out.tool_calls


def _reassemble(deltas):
    calls = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
        if delta.name is not None:
            assert call["name"] is None, "the name comes once, first"
            call["id"], call["name"] = delta.id, delta.name
        else:
            assert call["name"] is not None, "argument fragments follow the name"
        call["arguments"] += delta.arguments
    return [calls[i] for i in sorted(calls)]


TWO_CALLS = (
    "I will check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSan Francisco\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n<parameter=options>\n"
    '{"units": "C", "detail": [1, 2]}\n</parameter>\n<parameter=note>\nnull\n</parameter>\n</function>\n'
    "</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call>"
)


def test_parallel_calls_parse_with_typed_arguments_however_the_text_streams():
    expected = [
        ("get_weather", {"city": "San Francisco", "days": 3, "metric": True,
                         "options": {"units": "C", "detail": [1, 2]}, "note": None}),
        ("now", {}),
    ]
    for seed in range(40):
        parser, content, deltas = _run_tools(_pieces(TWO_CALLS, seed) if seed else [TWO_CALLS])
        assert content == "I will check.\n\n"
        calls = _reassemble(deltas)
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == expected
        assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == expected
        assert [c["id"] for c in calls] == [c.id for c in parser.calls]
        assert all(c["id"].startswith("call_") for c in calls)


def test_a_cut_off_call_still_closes_its_json():
    parser, content, deltas = _run_tools(["<tool_call>\n<function=get_weather>\n<parameter=city>\nOs", "lo"])
    (call,) = _reassemble(deltas)
    assert content == "" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}


def test_missing_close_tags_end_a_value_at_the_next_tag():
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n<parameter=days>\n2\n</function>\n</tool_call>"
    _, content, deltas = _run_tools([text])
    assert json.loads(_reassemble(deltas)[0]["arguments"]) == {"city": "Rome", "days": 2}


def test_text_that_only_looks_like_a_call_stays_content():
    for text in ["Use <tool_call> like this: nothing", "a <tool_c", "x <tool_call>\n<functio"]:
        parser, content, deltas = _run_tools([text])
        assert content == text and deltas == [] and parser.calls == []


def test_unknown_function_and_argument_names_pass_through_as_strings():
    text = "<tool_call>\n<function=mystery>\n<parameter=n>\n5\n</parameter>\n</function>\n</tool_call>"
    _, _, deltas = _run_tools([text])
    (call,) = _reassemble(deltas)
    assert call["name"] == "mystery" and json.loads(call["arguments"]) == {"n": "5"}
