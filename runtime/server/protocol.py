"""OpenAI request bodies for /v1/chat/completions and /v1/completions, as pydantic models.

Numbers and flags are strict (no "0.7" strings, no true for 1); range checks live in
SamplingParams.validate so offline and served generation agree on them. Unknown fields are
ignored, as vLLM and SGLang do. Extensions beyond OpenAI's API: top_k, min_p,
repetition_penalty, stop_token_ids, ignore_eos, skip_special_tokens, return_token_ids,
regex, choice, ebnf, structured_outputs, enable_thinking, chat_template_kwargs and mm_processor_kwargs.
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    """stream_options: whether the last streamed chunk carries usage."""

    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class FunctionDefinition(_Body):
    """A tool's function: name, description and JSON-schema parameters."""

    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Body):
    """One entry of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Body):
    """The function a named tool_choice forces."""

    name: StrictStr


class NamedToolChoice(_Body):
    """tool_choice {"type": "function", "function": {"name": ...}}."""

    type: Literal["function"] = "function"
    function: NamedFunction


class FunctionCall(_Body):
    """A past assistant call's function name and JSON arguments."""

    name: StrictStr
    arguments: Union[StrictStr, dict[str, Any]] = "{}"


class ToolCallMessagePart(_Body):
    """A past assistant turn's tool call."""

    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    """One conversation turn; content is text or a list of content parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, list[dict[str, Any]], None] = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallMessagePart] | None = None
    tool_call_id: StrictStr | None = None
    reasoning_content: StrictStr | None = None
    reasoning: StrictStr | None = None


class ResponseFormat(_Body):
    """response_format: text, json_object, json_schema with {"name", "schema", "strict", "description"}, or
    structural_tag with "structures" and "triggers" (the extension vLLM and SGLang take)."""

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: dict[str, Any] | None = None
    structures: list[Any] | None = None
    triggers: list[Any] | None = None
    format: Any = None  # xgrammar's structural tag form: read only to refuse it by name


class _Sampling(_Body):
    """Sampling fields shared by both endpoints (None: the checkpoint's generation_config default)."""

    model: StrictStr | None = None
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    top_k: StrictInt | None = None
    min_p: StrictFloat | None = None
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    repetition_penalty: StrictFloat | None = None
    seed: StrictInt | None = None
    n: StrictInt = 1
    stop: Union[StrictStr, list[StrictStr], None] = None
    stop_token_ids: list[StrictInt] | None = None
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True
    max_tokens: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    return_token_ids: StrictBool = False
    response_format: ResponseFormat | None = None  # output constraints (structured_outputs.py): one per request
    regex: StrictStr | None = None
    choice: list[StrictStr] | None = None
    ebnf: StrictStr | None = None
    structured_outputs: dict[str, Any] | None = None
    logit_bias: dict[str, StrictFloat] | None = None  # token id (as JSON keys are: a string) -> bias


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: StrictBool = True
    enable_thinking: StrictBool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None  # fps, num_frames, min/max_frames, min/max_pixels, size


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: Union[StrictStr, list[StrictInt], list[Union[StrictStr, list[StrictInt]]]]
    logprobs: StrictInt | None = None
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None
