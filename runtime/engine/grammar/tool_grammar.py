"""Tool calls in Qwen3.5's `qwen3_coder` format as a Lark grammar over the declared tools' parameter schemas.

The format is the one runtime/server/parsers/tool_calls.py reads: a `<tool_call>` block holding
`<function=NAME>` and one `<parameter=ARG>` block per argument, each on its own lines.
Values follow the text forms the server's tool parser reads back (parsers/arguments.py):
strings plain (any text, `<` and newlines included, that does not hold one of the tags the
parser ends a value at: `</parameter>`, `<parameter=`, `</function>`; a string with a maxLength
leaves out `<` instead, see _string), numbers, booleans and null as
their JSON text, objects and arrays as JSON under their own schema (llguidance's `%json`).
Parameters come in declaration order, required ones always, optional ones or not; no
undeclared parameter. A string's `format` is not enforced (the plain-text form has no JSON
string to check it on); `pattern`, `enum`, `const`, `minLength` and `maxLength` are.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qwen35.runtime.engine.grammar.constraints import JSON_LAYOUT, Constraint, GrammarError, lark_literal

CALL_START, CALL_END = "<tool_call>", "</tool_call>"  # special tokens: Lark names them bare, as single tokens
FUNCTION_OPEN, FUNCTION_CLOSE = "\n<function=", "</function>\n"
CALL_SEPARATOR = "\n"  # parallel calls: one block per line
_CLOSE = lark_literal("\n</parameter>\n")
_REGEX_CLOSE = "\\n<\\/parameter>\\n"
_ANY_CHARACTER = "(.|\\n)"
# The largest minLength of a string still written as any text (measured: 200 compiles and runs, 10000 does not).
FREE_TEXT_MIN_LENGTH = 64
# Plain text may hold any character but not the tags the parser ends a value at (an llguidance lexeme
# intersected with the complement of "holds a tag": `&` and `~` work on terminals only, so each plain
# value is a named terminal).
_HOLDS_END_TAG = f"/{_ANY_CHARACTER}*(<\\/parameter>|<parameter=|<\\/function>){_ANY_CHARACTER}*/"


def tool_choice_constraint(tools: Sequence[Mapping[str, Any]], tool_choice: str | Mapping[str, Any],
                           parallel_tool_calls: bool = True) -> Constraint | None:
    """The constraint of an OpenAI `tool_choice` over checked tools: None for "auto" and "none".

    "required": one or more calls (one when parallel calls are off) of any declared tool; a named
    function ({"name": ...}): exactly one call of it.
    """
    if tool_choice in ("auto", "none"):
        return None
    if tool_choice == "required":
        return Constraint("lark", tool_calls_grammar(tools, parallel_tool_calls), "tool_choice")
    chosen = [tool for tool in tools if _function(tool).get("name") == tool_choice["name"]]
    if not chosen:
        raise GrammarError(f"'tool_choice' names {tool_choice['name']!r}, which is not in 'tools'", "tool_choice")
    return Constraint("lark", tool_calls_grammar(chosen, parallel=False), "tool_choice")


def tool_calls_grammar(tools: Sequence[Mapping[str, Any]], parallel: bool) -> str:
    """Lark text for one call (or, with parallel, one or more calls on their own lines) of the given tools."""
    if not tools:
        raise GrammarError("a tool call grammar needs at least one tool in 'tools'", "tools")
    more_calls = f" ({lark_literal(CALL_SEPARATOR)} call)*" if parallel else ""
    rules = [f"start: call{more_calls}",
             f"call: {CALL_START} {lark_literal(FUNCTION_OPEN)} function "
             f"{lark_literal(FUNCTION_CLOSE)} {CALL_END}",
             "function: " + " | ".join(f"f{index}" for index in range(len(tools)))]
    terminals: list[str] = []
    for index, tool in enumerate(tools):
        function = _function(tool)
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") or {}
        required = set(parameters.get("required") or [])
        items = [lark_literal(f"{function['name']}>\n")]
        for position, (name, schema) in enumerate(properties.items()):
            rule = f"f{index}_p{position}"
            where = f"tools[{index}].function.parameters.properties.{name}"
            opening = lark_literal(f"<parameter={name}>\n")
            rules.append(f"{rule}: {opening} {_value(schema, where, terminals)}")
            items.append(rule if name in required else f"{rule}?")
        rules.append(f"f{index}: " + " ".join(items))
    return "\n".join(rules + terminals) + "\n"


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    return tool.get("function", tool)


def written_value(value: Any) -> str:
    """A value as the model writes it in a parameter: strings as themselves, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _value(schema: Any, where: str, terminals: list[str]) -> str:
    """A Lark expression for one parameter's value and its closing tag; plain-text terminals go to `terminals`."""
    if not isinstance(schema, Mapping):
        return _plain_text("*", terminals)
    if "const" in schema:
        return f"{lark_literal(written_value(schema['const']))} {_CLOSE}"
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise GrammarError(f"'{where}.enum' must be a non-empty list", where)
        return "(" + " | ".join(lark_literal(v) for v in dict.fromkeys(map(written_value, values))) + f") {_CLOSE}"
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return "(" + " | ".join(f"({_value(option, where, terminals)})" for option in options) + ")"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "(" + " | ".join(f"({_value({**schema, 'type': k}, where, terminals)})" for k in kind) + ")"
    if kind is None or kind == "string":
        return _string(schema, where, terminals)
    if kind == "boolean":
        return f'("true" | "false") {_CLOSE}'
    if kind == "null":
        return f'"null" {_CLOSE}'
    if kind in ("integer", "number", "object", "array"):
        inner = {**schema, "x-guidance": {**JSON_LAYOUT, "lenient": True}}
        return f"%json {json.dumps(inner, ensure_ascii=False)} {_CLOSE}"
    raise GrammarError(f"'{where}.type' {kind!r} is not a JSON Schema type", where)


def _string(schema: Mapping[str, Any], where: str, terminals: list[str]) -> str:
    pattern = schema.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise GrammarError(f"'{where}.pattern' must be a string", where)
        # JSON Schema patterns search; a value is the whole match, so the anchors go.
        body = pattern[1:] if pattern.startswith("^") else pattern
        body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
        escaped = body.replace("/", "\\/")
        return f"/(?:{escaped}){_REGEX_CLOSE}/"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if not isinstance(low, int) or (high is not None and not isinstance(high, int)):
        raise GrammarError(f"'{where}': minLength and maxLength must be integers", where)
    if high is None and low <= FREE_TEXT_MIN_LENGTH:
        return _plain_text("*" if not low else f"{{{low},}}", terminals)
    # A counted repetition intersected with the tag exclusion makes llguidance's lexer build too many
    # states (maxLength 60 already fails mid-value, measured): a bounded value keeps the length and
    # leaves out `<` instead, as one regex with its closing tag.
    return f"/[^<]{{{low},{'' if high is None else high}}}{_REGEX_CLOSE}/"


def _plain_text(repeat: str, terminals: list[str]) -> str:
    """A new terminal for `repeat` characters of any text but the end tags, and the closing tag: one lexeme (the
    lexer takes the longest text it can, so a separate closing literal would lose the value's last newline)."""
    name = f"TEXT{len(terminals)}"
    terminals.append(f"{name}: (/{_ANY_CHARACTER}{repeat}/ & ~{_HOLDS_END_TAG}) {_CLOSE}")
    return name
