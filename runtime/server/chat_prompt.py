"""Turn a chat request into prompt text: check messages and tools, apply tool_choice and thinking.

The prompt lists the tools unless tool_choice is "none"; a "required" or named tool_choice is
enforced by the output grammar (structured_outputs.py), not by the prompt.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from qwen35.planner.errors import InputError
from qwen35.runtime.server.errors import APIError, bad_request
from qwen35.runtime.server.media_parts import MediaPart, media_part
from qwen35.runtime.server.parsers.reasoning import prompt_opens_reasoning
from qwen35.runtime.server.protocol import ChatCompletionRequest, ChatMessage

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MEDIA_PARTS = {"image_url", "image", "input_image", "video_url", "video", "input_audio", "audio", "file"}
_RESERVED_TEMPLATE_KEYS = {"messages", "tools", "add_generation_prompt", "documents"}


@dataclass
class PreparedChat:
    """A chat request made ready for the engine."""

    prompt_text: str
    tools: list[dict[str, Any]] | None  # what the tool parser types arguments by (None: no parsing)
    tool_choice: str | dict[str, str] = "none"  # auto, none, required, or {"name": ...}
    starts_in_reasoning: bool = False
    prompt_ids: list[int] = field(default_factory=list)
    media: list[MediaPart] = field(default_factory=list)  # images and videos in prompt order


def _content_text(content: Any, where: str, text_only: bool,
                  media: list[MediaPart] | None = None) -> str | list[dict[str, Any]] | None:
    """Message content as text, or as text and image/video parts (those appended to `media`) when it has any."""
    if content is None or isinstance(content, str):
        return content
    pieces: list[Any] = []
    for index, part in enumerate(content):
        param = f"{where}.content[{index}]"
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            if not isinstance(part.get("text"), str):
                raise bad_request(f"Invalid value for '{param}.text': a text part needs a string 'text'.", param)
            pieces.append(part["text"])
        elif kind in _MEDIA_PARTS or any(key in part for key in _MEDIA_PARTS):
            item = None if text_only or media is None else media_part(part, param)
            if item is not None:
                # The template writes one <|vision_start|><|image_pad|><|vision_end|> per such part.
                media.append(item)
                pieces.append({"type": item.kind})
                continue
            if text_only:
                raise bad_request(f"'{param}' is a {kind or 'media'} part, but this server serves the text model "
                                  "only (no image, video or audio input yet); send text parts.", param,
                                  "unsupported_content")
            raise bad_request(f"'{param}': media input is not supported.", param, "unsupported_content")
        else:
            raise bad_request(f"Invalid value for '{param}.type': unknown content part type {kind!r}; "
                              "use 'text'.", param, "invalid_value")
    if all(isinstance(piece, str) for piece in pieces):
        return "".join(pieces)
    return [piece if isinstance(piece, dict) else {"type": "text", "text": piece} for piece in pieces]


def _arguments(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as error:
        raise bad_request(f"Invalid value for '{param}': tool call arguments must be a JSON object ({error}).",
                          param) from None
    if not isinstance(parsed, dict):
        raise bad_request(f"Invalid value for '{param}': tool call arguments must be a JSON object.", param)
    return parsed


def template_messages(messages: list[ChatMessage], text_only: bool,
                      media: list[MediaPart] | None = None) -> list[dict[str, Any]]:
    """Messages as the chat template reads them (developer -> system, tool arguments parsed).

    With `media` (a list to fill), image and video parts become {"type": "image"/"video"} template
    parts and their sources are appended in prompt order; without it they are refused.
    """
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        converted: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                     "content": _content_text(message.content, where, text_only, media) or ""}
        if message.tool_calls and message.role != "assistant":
            raise bad_request(f"'{where}.tool_calls' is only allowed on assistant messages.", f"{where}.tool_calls")
        if message.role == "tool" and message.content is None:
            raise bad_request(f"Missing required parameter: '{where}.content' (a tool message carries the result).",
                              f"{where}.content", "missing_required_parameter")
        reasoning = message.reasoning_content if message.reasoning_content is not None else message.reasoning
        if reasoning is not None and message.role == "assistant":
            converted["reasoning_content"] = reasoning
        if message.tool_calls:
            converted["tool_calls"] = [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name,
                              "arguments": _arguments(call.function.arguments,
                                                      f"{where}.tool_calls[{j}].function.arguments")}}
                for j, call in enumerate(message.tool_calls)]
        if message.tool_call_id is not None:
            converted["tool_call_id"] = message.tool_call_id
        out.append(converted)
    return out


def _check_schema(parameters: Any, param: str) -> None:
    if not isinstance(parameters, dict):
        raise bad_request(f"Invalid schema for '{param}': parameters must be a JSON Schema object.", param,
                          "invalid_tool_schema")
    kind = parameters.get("type", "object")
    if kind != "object":
        raise bad_request(f"Invalid schema for '{param}': the top-level type must be 'object', got {kind!r}.",
                          param, "invalid_tool_schema")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
        raise bad_request(f"Invalid schema for '{param}.properties': it must map each argument name to a "
                          "schema object.", f"{param}.properties", "invalid_tool_schema")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise bad_request(f"Invalid schema for '{param}.required': it must be a list of argument names.",
                          f"{param}.required", "invalid_tool_schema")
    missing = [name for name in required if name not in properties]
    if missing:
        raise bad_request(f"Invalid schema for '{param}.required': {missing} are not in 'properties'.",
                          f"{param}.required", "invalid_tool_schema")


def check_tools(body: ChatCompletionRequest) -> tuple[list[dict[str, Any]], str | dict]:
    """The tools as plain dicts and the effective tool_choice; 400 on a broken definition."""
    tools = []
    names = set()
    for index, tool in enumerate(body.tools or []):
        param = f"tools[{index}].function"
        name = tool.function.name
        if not FUNCTION_NAME.match(name):
            raise bad_request(f"Invalid value for '{param}.name': {name!r} must be 1-64 letters, digits, "
                              "underscores, dots or dashes.", f"{param}.name", "invalid_value")
        if name in names:
            raise bad_request(f"Invalid value for '{param}.name': the function {name!r} is defined twice.",
                              f"{param}.name", "invalid_value")
        names.add(name)
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"{param}.parameters")
        tools.append(tool.model_dump(exclude_none=True))
    choice = body.tool_choice
    if choice is None:
        return tools, "auto" if tools else "none"
    if isinstance(choice, str):
        if choice == "required" and not tools:
            raise bad_request("Invalid value for 'tool_choice': 'required' needs a non-empty 'tools' list.",
                              "tool_choice")
        return tools, choice
    if choice.function.name not in names:
        raise bad_request(f"Invalid value for 'tool_choice': the function {choice.function.name!r} is not in "
                          "'tools'.", "tool_choice.function.name")
    return tools, {"name": choice.function.name}


def template_kwargs(body: ChatCompletionRequest) -> dict[str, Any]:
    """chat_template_kwargs with the top-level enable_thinking folded in."""
    kwargs = dict(body.chat_template_kwargs or {})
    reserved = sorted(_RESERVED_TEMPLATE_KEYS & set(kwargs))
    if reserved:
        raise bad_request(f"Invalid value for 'chat_template_kwargs': {reserved} are set by the server.",
                          "chat_template_kwargs")
    if body.enable_thinking is not None:
        kwargs["enable_thinking"] = body.enable_thinking
    if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], (bool, type(None))):
        raise bad_request("Invalid value for 'chat_template_kwargs.enable_thinking': must be a boolean.",
                          "chat_template_kwargs.enable_thinking")
    return kwargs


def prepare_chat(body: ChatCompletionRequest, tokenizer: Any, text_only: bool) -> PreparedChat:
    """Render the prompt text for a chat request, with its tools listed unless tool_choice is "none"."""
    media: list[MediaPart] = []
    messages = template_messages(body.messages, text_only, media)
    tools, choice = check_tools(body)
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        raise APIError(400, "This model has no chat template; use /v1/completions.", code="no_chat_template")
    try:
        text = template.render(messages, tools=tools if choice != "none" else None, add_generation_prompt=True,
                               **template_kwargs(body))
    except InputError as error:
        raise bad_request(error.one_line(), "messages") from None
    return PreparedChat(text, tools if choice != "none" else None, choice, prompt_opens_reasoning(text), media=media)
