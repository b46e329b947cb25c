"""Type a qwen3_coder parameter's text by the tool's JSON schema.

The model writes every argument as text: strings, numbers and booleans plain, objects and
lists as JSON. The schema says which JSON value the text stands for; text that does not
fit its declared type stays a string rather than being dropped. An enum or const member is read
back as itself (the tool-call grammar writes 1 for enum [1, 2], so "1" is the number); where a
union allows a string and other types, the others are tried first, as the text "12345" under
anyOf [string maxLength 2, integer] can only be the integer the grammar let through.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qwen35.runtime.engine.grammar.tool_grammar import written_value

_STRING_TYPES = {"string", "str", "text", "varchar", "char", "enum"}
_INTEGER_TYPES = {"integer", "int", "long", "short", "uint"}
_NUMBER_TYPES = {"number", "float", "double", "num"}
_BOOLEAN_TYPES = {"boolean", "bool", "binary"}
_JSON_TYPES = {"object", "array", "dict", "list"}


def schema_types(schema: Any) -> list[str]:
    """The JSON types a property schema allows, in declaration order (anyOf/oneOf flattened)."""
    if not isinstance(schema, Mapping):
        return []
    declared = schema.get("type")
    types: list[str] = []
    if isinstance(declared, str):
        types.append(declared.lower())
    elif isinstance(declared, list):
        types.extend(t.lower() for t in declared if isinstance(t, str))
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            types.extend(schema_types(option))
    if not types and "enum" in schema:
        types.append("enum")
    if not types and "properties" in schema:
        types.append("object")
    return list(dict.fromkeys(types))


def _as_number(text: str) -> tuple[bool, Any]:
    try:
        return True, int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return False, None
    if number != number or number in (float("inf"), float("-inf")):
        return False, None  # JSON has no NaN or infinity
    return True, number


def _as_integer(text: str) -> tuple[bool, Any]:
    # An integer parameter also takes a whole-valued number such as "3.0".
    ok, number = _as_number(text)
    if not ok or isinstance(number, int):
        return ok, number
    return (True, int(number)) if number.is_integer() else (False, None)


def _as_boolean(text: str) -> tuple[bool, Any]:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return True, lowered == "true"
    return False, None


def _as_json(text: str, wanted: str) -> tuple[bool, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False, None
    if wanted in ("object", "dict") and not isinstance(value, dict):
        return False, None
    if wanted in ("array", "list") and not isinstance(value, list):
        return False, None
    return True, value


def _members(schema: Any) -> list[Any]:
    """The enum and const values a property schema lists (anyOf/oneOf flattened)."""
    if not isinstance(schema, Mapping):
        return []
    members = list(schema["enum"]) if isinstance(schema.get("enum"), list) else []
    if "const" in schema:
        members.append(schema["const"])
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            members.extend(_members(option))
    return members


def convert_parameter(raw: str, schema: Any) -> Any:
    """The JSON value of one parameter's text (one leading and trailing newline trimmed)."""
    text = raw[1:] if raw.startswith("\n") else raw
    text = text[:-1] if text.endswith("\n") else text
    for member in _members(schema):
        if written_value(member) == text:
            return member
    types = schema_types(schema)
    if text.strip().lower() == "null" and (not types or "null" in types):
        return None
    if len(types) > 1:
        types = sorted(types, key=lambda wanted: wanted in _STRING_TYPES)  # stable: strings last
    for wanted in types:
        if wanted in _STRING_TYPES:
            return text
        stripped = text.strip()
        if wanted in _INTEGER_TYPES:
            ok, value = _as_integer(stripped)
        elif wanted in _NUMBER_TYPES:
            ok, value = _as_number(stripped)
        elif wanted in _BOOLEAN_TYPES:
            ok, value = _as_boolean(stripped)
        elif wanted in _JSON_TYPES:
            ok, value = _as_json(stripped, wanted)
        elif wanted == "null":
            ok, value = stripped.lower() == "null", None
        else:
            ok, value = False, None
        if ok:
            return value
    if not types:
        # No schema for this argument: JSON objects and lists still come back as themselves.
        stripped = text.strip()
        if stripped[:1] in ("{", "["):
            ok, value = _as_json(stripped, "any")
            if ok:
                return value
    return text
