"""Incremental parser for Qwen3.5's `qwen3_coder` tool calls in streamed answer text.

    <tool_call>
    <function=NAME>
    <parameter=ARG>
    VALUE
    </parameter>
    </function>
    </tool_call>

Several blocks in a row are parallel calls. Streaming deltas follow OpenAI's shape: a call's
first delta carries its index, id and name with empty arguments; later deltas carry argument
fragments (one per finished parameter, then the closing brace) that concatenate to a JSON
object. Text outside the blocks is ordinary content.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen35.runtime.server.parsers.arguments import convert_parameter

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
FUNCTION_START = "<function="
FUNCTION_END = "</function>"
PARAMETER_START = "<parameter="
PARAMETER_END = "</parameter>"

_TEXT, _CALL, _FUNCTION, _PARAMETER, _AFTER_FUNCTION = range(5)


@dataclass
class ToolCallDelta:
    """One streamed piece of a tool call (OpenAI's `delta.tool_calls[]` entry)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCall:
    """A finished call: its id, function name and JSON-encoded arguments."""

    id: str
    name: str
    arguments: str = ""
    closed: bool = False


@dataclass
class ToolParseDelta:
    """What one piece of answer text adds: plain content and tool-call deltas."""

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


def new_tool_call_id() -> str:
    """An OpenAI-style call id (`call_` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _partial_suffix(text: str, tags: Sequence[str]) -> int:
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


def tool_properties(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Each function's parameter schemas by name, from an OpenAI `tools` list."""
    found: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        found[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return found


class ToolCallParser:
    """Feed answer text as it streams; get content and tool-call deltas back."""

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None):
        self.properties = tool_properties(tools)
        self.calls: list[ToolCall] = []
        self._state = _TEXT
        self._buffer = ""
        self._parameter: str | None = None
        self._skip_whitespace = False  # between and after calls, whitespace is not content

    def feed(self, text: str) -> ToolParseDelta:
        """Add answer text; return the content and call deltas it settles."""
        self._buffer += text
        out = ToolParseDelta()
        while self._step(out, final=False):
            pass
        return out

    def flush(self) -> ToolParseDelta:
        """End of generation: finish an open call, or give back unparsed text as content."""
        out = ToolParseDelta()
        while self._step(out, final=True):
            pass
        if self._state == _PARAMETER:
            self._finish_parameter(self._buffer, out)
            self._buffer = ""
            self._state = _FUNCTION
        if self._state in (_FUNCTION, _AFTER_FUNCTION) and self.calls and not self.calls[-1].closed:
            self._close_call(out)
        if self._state == _CALL:
            out.content += TOOL_CALL_START + self._buffer
        elif self._state == _TEXT and not self._skip_whitespace:
            out.content += self._buffer
        elif self._state == _TEXT:
            out.content += self._buffer.lstrip()
        self._buffer = ""
        self._state = _TEXT
        return out

    def _step(self, out: ToolParseDelta, final: bool) -> bool:
        """Consume what the buffer settles in the current state; False when it needs more text."""
        if self._state == _TEXT:
            return self._step_text(out, final)
        if self._state == _CALL:
            return self._step_call(out)
        if self._state == _FUNCTION:
            return self._step_function(out)
        if self._state == _PARAMETER:
            return self._step_parameter(out)
        return self._step_after_function()

    def _step_text(self, out: ToolParseDelta, final: bool) -> bool:
        if self._skip_whitespace:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
        start = self._buffer.find(TOOL_CALL_START)
        if start >= 0:
            out.content += self._buffer[:start]
            self._buffer = self._buffer[start + len(TOOL_CALL_START):]
            self._state = _CALL
            return True
        if final:
            return False
        keep = len(self._buffer) - _partial_suffix(self._buffer, (TOOL_CALL_START,))
        out.content += self._buffer[:keep]
        if keep:
            self._skip_whitespace = False
        self._buffer = self._buffer[keep:]
        return False

    def _step_call(self, out: ToolParseDelta) -> bool:
        stripped = self._buffer.lstrip()
        if stripped.startswith(FUNCTION_START):
            close = stripped.find(">", len(FUNCTION_START))
            if close < 0:
                return False
            name = stripped[len(FUNCTION_START):close].strip()
            call = ToolCall(new_tool_call_id(), name)
            self.calls.append(call)
            out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, call.id, name, ""))
            self._buffer = stripped[close + 1:]
            self._state = _FUNCTION
            return True
        if FUNCTION_START.startswith(stripped):
            return False
        # Not a call after all: the tag and what follows are ordinary text.
        out.content += TOOL_CALL_START
        self._state = _TEXT
        return True

    def _step_function(self, out: ToolParseDelta) -> bool:
        stripped = self._buffer.lstrip()
        if stripped.startswith(PARAMETER_START):
            close = stripped.find(">", len(PARAMETER_START))
            if close < 0:
                return False
            self._parameter = stripped[len(PARAMETER_START):close].strip()
            self._buffer = stripped[close + 1:]
            self._state = _PARAMETER
            return True
        if stripped.startswith(FUNCTION_END):
            self._close_call(out)
            self._buffer = stripped[len(FUNCTION_END):]
            self._state = _AFTER_FUNCTION
            return True
        if stripped.startswith(TOOL_CALL_END):  # a call block closed without </function>
            self._close_call(out)
            self._buffer = stripped
            self._state = _AFTER_FUNCTION
            return True
        if any(tag.startswith(stripped) for tag in (PARAMETER_START, FUNCTION_END, TOOL_CALL_END)):
            return False
        # Stray text inside a function is not part of any argument: skip to the next tag.
        next_tag = stripped.find("<", 1)
        self._buffer = stripped[next_tag:] if next_tag > 0 else ""
        return next_tag > 0

    def _step_parameter(self, out: ToolParseDelta) -> bool:
        # A value ends at </parameter>, or where the next parameter or the function's end
        # begins when the model leaves the close tag out.
        ends = [(self._buffer.find(tag), tag) for tag in (PARAMETER_END, PARAMETER_START, FUNCTION_END)]
        ends = [(at, tag) for at, tag in ends if at >= 0]
        if not ends:
            return False
        at, tag = min(ends)
        self._finish_parameter(self._buffer[:at], out)
        self._buffer = self._buffer[at + len(tag):] if tag == PARAMETER_END else self._buffer[at:]
        self._state = _FUNCTION
        return True

    def _step_after_function(self) -> bool:
        stripped = self._buffer.lstrip()
        if stripped.startswith(TOOL_CALL_END):
            self._buffer = stripped[len(TOOL_CALL_END):]
            self._state = _TEXT
            self._skip_whitespace = True
            return True
        if stripped.startswith(FUNCTION_START):  # several functions inside one block
            self._buffer = stripped
            self._state = _CALL
            return True
        if not stripped or TOOL_CALL_END.startswith(stripped) or FUNCTION_START.startswith(stripped):
            return False
        self._state = _TEXT  # the block never closed; read on as text
        self._skip_whitespace = True
        return True

    def _finish_parameter(self, raw: str, out: ToolParseDelta) -> None:
        call = self.calls[-1]
        name = self._parameter or ""
        schema = self.properties.get(call.name, {}).get(name)
        value = convert_parameter(raw, schema)
        fragment = ("{" if not call.arguments else ", ") + json.dumps(name, ensure_ascii=False) + ": "
        fragment += json.dumps(value, ensure_ascii=False)
        call.arguments += fragment
        out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, arguments=fragment))
        self._parameter = None

    def _close_call(self, out: ToolParseDelta) -> None:
        call = self.calls[-1]
        if call.closed:
            return
        fragment = "}" if call.arguments else "{}"
        call.arguments += fragment
        call.closed = True
        out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, arguments=fragment))
