"""What a request constrains its output to: a Constraint names a grammar in one of llguidance's input forms.

The server turns `response_format`, the `regex` / `choice` extensions and `tool_choice` (in
tool_grammar.py) into at most one Constraint per request; the compiler (compiler.py) turns it into a matcher. Plain data:
no llguidance or torch here, so request checking stays cheap to import.

JSON is written compactly with the separators `json.dumps` uses (", " and ": ") and no free
whitespace elsewhere: a model that may put any whitespace anywhere can stall in runs of newlines,
and this is also the text Qwen3.5 itself writes for JSON values.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from qwen35.planner.errors import InputError

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarError(InputError):
    """A constraint that cannot be compiled (invalid or unsupported schema, bad regex); `param` names its field."""

    def __init__(self, message: str, param: str, hint: str = ""):
        super().__init__(message, hint)
        self.param = param


@dataclass(frozen=True)
class Constraint:
    """A grammar for the whole output: `kind` says how llguidance reads `source`.

    Equal constraints compile once (the compiler caches by kind and source); `param` is the request
    field it came from, for error messages, and takes no part in equality.
    """

    # grammar: Lark or GBNF text, as a client sends it; structural_tag: {"structures": [...], "triggers": [...]}
    kind: Literal["json_schema", "regex", "lark", "grammar", "structural_tag"]
    source: str
    param: str = field(default="", compare=False)


def json_schema_constraint(schema: Any, strict: bool = True, param: str = "response_format.json_schema") -> Constraint:
    """Output that is one JSON value valid under `schema`.

    strict: every keyword must be supported (an unsupported one is an error); otherwise unsupported
    keywords are ignored, as a non-strict OpenAI schema is a hint rather than a contract.
    """
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise GrammarError(f"'{param}' must be a JSON Schema object, got {type(schema).__name__}", param)
    options = {**JSON_LAYOUT, "lenient": not strict, **dict(schema.get("x-guidance") or {})}
    return Constraint("json_schema", json.dumps({**schema, "x-guidance": options}), param)


def json_object_constraint(param: str = "response_format") -> Constraint:
    """Output that is one JSON object (any keys and values)."""
    return json_schema_constraint({"type": "object"}, True, param)


def regex_constraint(pattern: Any, param: str = "regex") -> Constraint:
    """Output that matches the regular expression as a whole."""
    if not isinstance(pattern, str) or not pattern:
        raise GrammarError(f"'{param}' must be a non-empty regular expression string", param)
    return Constraint("regex", pattern, param)


def grammar_constraint(text: Any, param: str = "ebnf") -> Constraint:
    """Output in a context-free grammar the client wrote: Lark, or GBNF (llama.cpp's EBNF, `root ::= ...`)."""
    if not isinstance(text, str) or not text.strip():
        raise GrammarError(f"'{param}' must be a non-empty grammar (Lark, or GBNF with a 'root' rule)", param)
    return Constraint("grammar", text, param)


def structural_tag_constraint(spec: Any, param: str = "response_format") -> Constraint:
    """Free text in which a trigger starts one of the structures: its `begin`, JSON under its `schema`, its `end`.

    The structural tag vLLM and SGLang take: {"structures": [{"begin", "schema", "end"}, ...],
    "triggers": [...]}, every begin starting with one of the triggers (e.g. "<function=").
    """
    if not isinstance(spec, Mapping):
        raise GrammarError(f"'{param}' must be an object with 'structures' and 'triggers'", param)
    if "format" in spec and "structures" not in spec:
        raise GrammarError(f"'{param}.format' (xgrammar's structural tag form) is not supported here; send "
                           "'structures' and 'triggers'", f"{param}.format")
    structures, triggers = spec.get("structures"), spec.get("triggers")
    if not isinstance(triggers, list) or not triggers or not all(isinstance(t, str) and t for t in triggers):
        raise GrammarError(f"'{param}.triggers' must be a non-empty list of non-empty strings", f"{param}.triggers")
    if not isinstance(structures, list) or not structures:
        raise GrammarError(f"'{param}.structures' must be a non-empty list", f"{param}.structures")
    tags = []
    for index, structure in enumerate(structures):
        where = f"{param}.structures[{index}]"
        if not isinstance(structure, Mapping) or not all(isinstance(structure.get(key), str) for key in ("begin", "end")):
            raise GrammarError(f"'{where}' must have string 'begin' and 'end' and a JSON Schema 'schema'", where)
        trigger = next((t for t in triggers if structure["begin"].startswith(t)), None)
        if trigger is None:
            raise GrammarError(f"'{where}.begin' {structure['begin']!r} starts with none of the triggers", where)
        schema = structure.get("schema")
        schema = {} if schema is None else schema
        if not isinstance(schema, Mapping):
            raise GrammarError(f"'{where}.schema' must be a JSON Schema object", where)
        tags.append({"trigger": trigger, "begin": structure["begin"], "end": structure["end"],
                     "schema": {**schema, "x-guidance": {**JSON_LAYOUT, **dict(schema.get("x-guidance") or {})}}})
    return Constraint("structural_tag", json.dumps(tags), param)


def lark_literal(text: str) -> str:
    """A Lark string literal for text (JSON's escapes, which Lark reads the same)."""
    return json.dumps(text, ensure_ascii=False)


def choice_constraint(choices: Any, param: str = "choice") -> Constraint:
    """Output that is exactly one of the given strings."""
    if (not isinstance(choices, list) or not choices
            or not all(isinstance(choice, str) and choice for choice in choices)):
        raise GrammarError(f"'{param}' must be a non-empty list of non-empty strings", param)
    alternatives = " | ".join(lark_literal(choice) for choice in dict.fromkeys(choices))
    return Constraint("lark", f"start: {alternatives}\n", param)


def response_format_constraint(response_format: Mapping[str, Any] | None) -> Constraint | None:
    """The constraint of an OpenAI `response_format` (None for text or none given)."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_object_constraint()
    if kind == "structural_tag":
        return structural_tag_constraint(response_format)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise GrammarError("'response_format.json_schema' is required for type 'json_schema': send "
                               "{\"name\": ..., \"schema\": {...}}", "response_format.json_schema")
        schema = spec.get("schema", {"type": "object"})
        return json_schema_constraint(schema, bool(spec.get("strict")), "response_format.json_schema.schema")
    raise GrammarError(f"'response_format.type' {kind!r} is not one of 'text', 'json_object', 'json_schema', "
                       "'structural_tag'", "response_format.type")
