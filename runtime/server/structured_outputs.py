"""The one output constraint of a request, from `response_format`, `tool_choice`, or the guided-decoding
extensions, compiled before the request is queued so a bad schema answers 400 and nothing else.

Extensions (in `extra_body`), as SGLang and vLLM spell them:
  "regex": "...", "choice": ["a", "b"], "ebnf": "..."            (top level; ebnf as SGLang takes it)
  "structured_outputs": {"json": {...}} / {"regex": "..."} / {"choice": [...]} / {"grammar": "..."} /
                        {"json_object": true} / {"structural_tag": "..."}   (vLLM)
  "response_format": {"type": "structural_tag", "structures": [...], "triggers": [...]}   (both)
A grammar is Lark or GBNF (`root ::= ...`), as both engines' llguidance backends read it.
A request may carry one of these, or a json `response_format`, or a "required" / named
`tool_choice`: two at once are refused, since no output could be held to both.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from qwen35.runtime.engine.grammar.constraints import (Constraint, GrammarError, choice_constraint,
                                                       grammar_constraint, json_object_constraint,
                                                       json_schema_constraint, regex_constraint,
                                                       response_format_constraint, structural_tag_constraint)
from qwen35.runtime.engine.grammar.tool_grammar import tool_choice_constraint
from qwen35.runtime.server.errors import APIError, bad_request
from qwen35.runtime.server.serving import ServerState

_STRUCTURED_OUTPUT_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
# vLLM's options beside the constraint that need nothing here: JSON is always written without free
# whitespace (which any whitespace_pattern allows; vLLM's guidance backend ignores it too), and there is
# no fallback backend to disable.
_STRUCTURED_OUTPUT_NO_OPS = ("disable_any_whitespace", "disable_fallback", "whitespace_pattern")
_SCHEMA_VALUES = ("const", "enum", "default", "examples")  # JSON values in a schema, not schemas
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")  # name -> schema


def request_constraint(body: Any, tools: list[dict[str, Any]] | None = None,
                       tool_choice: str | Mapping[str, Any] = "none") -> Constraint | None:
    """The request's output constraint (None: free text); 400 for a malformed one or for two at once."""
    try:
        found = [(name, constraint) for name, constraint in _constraints(body, tools, tool_choice)
                 if constraint is not None]
    except GrammarError as error:
        raise _bad_constraint(error, "invalid_value") from None
    if len(found) > 1:
        names = ", ".join(f"'{name}'" for name, _ in found)
        raise bad_request(f"The request constrains its output twice ({names}); send one of them.", found[1][0],
                          "conflicting_constraints")
    return found[0][1] if found else None


def _constraints(body: Any, tools, tool_choice):
    if body.response_format is not None:
        yield "response_format", response_format_constraint(body.response_format.model_dump(exclude_none=True))
    if body.regex is not None:
        yield "regex", regex_constraint(body.regex)
    if body.choice is not None:
        yield "choice", choice_constraint(body.choice)
    if body.ebnf is not None:
        yield "ebnf", grammar_constraint(body.ebnf)
    # Unset fields may come as null (a client serialising vLLM's StructuredOutputsParams whole).
    options = {kind: value for kind, value in (body.structured_outputs or {}).items() if value is not None}
    closed_objects = options.pop("disable_additional_properties", False)
    if not isinstance(closed_objects, bool):
        raise GrammarError("'structured_outputs.disable_additional_properties' must be true or false",
                           "structured_outputs.disable_additional_properties")
    if body.structured_outputs is not None and not set(options) - set(_STRUCTURED_OUTPUT_NO_OPS):
        raise GrammarError(f"'structured_outputs' names no constraint; send one of "
                           f"{', '.join(_STRUCTURED_OUTPUT_KINDS)}", "structured_outputs")
    for kind, value in options.items():
        param = f"structured_outputs.{kind}"
        if kind in _STRUCTURED_OUTPUT_NO_OPS:
            continue
        if kind == "json":
            schema = _schema(value, param)
            yield param, json_schema_constraint(_closed(schema) if closed_objects else schema, strict=True, param=param)
        elif kind == "json_object":
            if value is not True:
                raise GrammarError(f"'{param}' must be true", param)
            yield param, json_object_constraint(param)
        elif kind == "structural_tag":
            yield param, structural_tag_constraint(_schema(value, param), param)
        elif kind == "regex":
            yield param, regex_constraint(value, param)
        elif kind == "choice":
            yield param, choice_constraint(value, param)
        elif kind == "grammar":
            yield param, grammar_constraint(value, param)
        else:
            raise GrammarError(f"'{kind}' is not supported here; use one of {', '.join(_STRUCTURED_OUTPUT_KINDS)}",
                               param)
    if tools:
        yield "tool_choice", tool_choice_constraint(tools, tool_choice, body.parallel_tool_calls)


def _closed(schema: Any) -> Any:
    """The schema with additionalProperties false on every object that does not say (vLLM's
    disable_additional_properties)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            closed[key] = {name: _closed(sub) for name, sub in value.items()}
        else:
            closed[key] = value if key in _SCHEMA_VALUES else _closed(value)
    if ("properties" in closed or "patternProperties" in closed) and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _bad_constraint(error: GrammarError, code: str) -> APIError:
    """A 400 with the constraint error's message (which names its field) and the hint."""
    message = error.message.rstrip(". \n")
    return bad_request(f"{message}; {error.hint}." if error.hint else f"{message}.", error.param, code)


def _schema(value: Any, param: str) -> Any:
    """A JSON value (a schema, a structural tag) sent as an object or as JSON text (vLLM takes both)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise GrammarError(f"'{param}' is not valid JSON ({error})", param) from None


async def compile_constraint(state: ServerState, constraint: Constraint) -> None:
    """Compile (or find cached) the constraint off the event loop; 400 naming the problem when it cannot be."""
    try:
        compiled, fresh = await asyncio.to_thread(state.engine.compile, constraint)
    except GrammarError as error:
        raise _bad_constraint(error, "invalid_schema") from None
    if fresh:
        state.metrics.grammar_compile_seconds.observe(compiled.compile_seconds)
    else:
        state.metrics.grammar_cache_hits.inc()
