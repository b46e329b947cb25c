"""POST /v1/chat/completions: reasoning and tool calls parsed from the output, streamed or whole.

One `ChatChoice` per choice runs the output text through the reasoning parser, then the
answer part through the tool-call parser; streaming and non-streaming responses are built
from the same deltas, so both agree on every byte.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from qwen35.runtime.engine.async_engine import GenerationOutput, RequestHandle
from qwen35.runtime.engine.sampling import MAX_LOGPROBS
from qwen35.runtime.server.chat_prompt import PreparedChat, prepare_chat
from qwen35.runtime.server.errors import bad_request
from qwen35.runtime.server.logprobs import TokenTexts, chat_logprobs
from qwen35.runtime.server.media_parts import prepare_media
from qwen35.runtime.server.parsers.reasoning import ReasoningParser
from qwen35.runtime.server.parsers.tool_calls import ToolCallDelta, ToolCallParser
from qwen35.runtime.server.protocol import ChatCompletionRequest
from qwen35.runtime.server.request_body import parse_body, read_json_body
from qwen35.runtime.server.serving import (ServerState, collect, engine_failure, merge_outputs, request_id,
                                           timeout_error, usage)
from qwen35.runtime.server.structured_outputs import compile_constraint, request_constraint
from qwen35.runtime.server.streaming import DONE, EventStreamResponse, choice_chunk, sse


def _tool_delta_json(delta: ToolCallDelta) -> dict[str, Any]:
    if delta.name is not None:
        return {"index": delta.index, "id": delta.id, "type": "function",
                "function": {"name": delta.name, "arguments": delta.arguments}}
    return {"index": delta.index, "function": {"arguments": delta.arguments}}


class ChatChoice:
    """One choice's parsers and accumulated answer."""

    def __init__(self, prepared: PreparedChat, parallel_tool_calls: bool):
        self.reasoning_parser = ReasoningParser(prepared.starts_in_reasoning)
        self.tool_parser = ToolCallParser(prepared.tools) if prepared.tools is not None else None
        self.parallel_tool_calls = parallel_tool_calls
        self.content = ""
        self.reasoning = ""
        self.token_ids: list[int] = []
        self.cached_tokens = 0  # of the prompt, from the prefix cache
        self.logprobs: list = []
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None

    def feed(self, output: GenerationOutput) -> dict[str, Any]:
        """The delta (content / reasoning_content / tool_calls) one engine output adds."""
        self.token_ids.extend(output.token_ids)
        self.cached_tokens = output.num_cached_tokens
        if output.logprobs:
            self.logprobs.extend(output.logprobs)
        split = self.reasoning_parser.feed(output.text)
        reasoning, answer = split.reasoning, split.content
        if output.finish_reason is not None:
            tail = self.reasoning_parser.flush()
            reasoning, answer = reasoning + tail.reasoning, answer + tail.content
        content, calls = answer, []
        if self.tool_parser is not None:
            parsed = self.tool_parser.feed(answer)
            content, calls = parsed.content, parsed.tool_calls
            if output.finish_reason is not None:
                tail = self.tool_parser.flush()
                content, calls = content + tail.content, calls + tail.tool_calls
        if output.finish_reason is not None:
            self.finish_reason = output.finish_reason
            self.stop_reason = output.stop_reason
            if self.finish_reason == "stop" and self.tool_calls():
                self.finish_reason = "tool_calls"
        return self._delta(reasoning, content, calls)

    def _delta(self, reasoning: str, content: str, calls: list[ToolCallDelta]) -> dict[str, Any]:
        self.reasoning += reasoning
        self.content += content
        if not self.parallel_tool_calls:
            calls = [c for c in calls if c.index == 0]
        delta: dict[str, Any] = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        if calls:
            merged: list[ToolCallDelta] = []
            for call in calls:  # consecutive argument fragments of one call travel as one entry
                if merged and call.name is None and merged[-1].index == call.index:
                    merged[-1].arguments += call.arguments
                else:
                    merged.append(ToolCallDelta(call.index, call.id, call.name, call.arguments))
            delta["tool_calls"] = [_tool_delta_json(c) for c in merged]
        return delta

    def tool_calls(self) -> list[dict[str, Any]]:
        """Finished calls as OpenAI `message.tool_calls` entries."""
        if self.tool_parser is None:
            return []
        calls = self.tool_parser.calls if self.parallel_tool_calls else self.tool_parser.calls[:1]
        return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls]


async def create_chat_completion(request: Request, state: ServerState):
    """Handle one chat completion request."""
    data = await read_json_body(request, state.settings.max_body_bytes, state.settings.body_timeout)
    body = parse_body(ChatCompletionRequest, data)
    model = state.check_model(body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("Invalid value for 'top_logprobs': it needs 'logprobs': true.", "top_logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
        raise bad_request(f"Invalid value for 'top_logprobs': must be an integer in [0, {MAX_LOGPROBS}], got "
                          f"{body.top_logprobs}.", "top_logprobs", "invalid_value")
    prepared = prepare_chat(body, state.tokenizer, state.settings.text_only)
    prepared.prompt_ids = await state.encode(prepared.prompt_text)
    media = None
    if prepared.media:
        # Placeholders expanded to one pad per embedding: usage and the context check count these.
        prepared.prompt_ids, media = await prepare_media(prepared.prompt_ids, prepared.media, state.settings.vision,
                                                         body.mm_processor_kwargs, state.tokenizer.encode)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_tokens = state.resolve_max_tokens(requested, len(prepared.prompt_ids), param, "messages")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = state.sampling_params(body, max_tokens, logprobs)
    constraint = request_constraint(body, prepared.tools, prepared.tool_choice)
    if constraint is not None:
        await compile_constraint(state, constraint)
        for param in params:
            param.constraint = constraint
    handles = state.submit(prepared.prompt_ids, params, body.skip_special_tokens, media=media)
    choices = [ChatChoice(prepared, body.parallel_tool_calls) for _ in handles]
    meta = {"id": request_id("chatcmpl"), "created": int(time.time()), "model": model}
    if body.stream:
        return EventStreamResponse(_stream(state, body, prepared, handles, choices, meta))

    def consume(index: int, output: GenerationOutput) -> None:
        choices[index].feed(output)

    await collect(state, request, handles, consume)
    return JSONResponse(_response(state, body, prepared, choices, meta))


def _response(state: ServerState, body: ChatCompletionRequest, prepared: PreparedChat,
              choices: list[ChatChoice], meta: dict[str, Any]) -> dict[str, Any]:
    texts = TokenTexts(state.tokenizer)
    out = []
    for index, choice in enumerate(choices):
        calls = choice.tool_calls()
        message: dict[str, Any] = {"role": "assistant", "content": choice.content or (None if calls else ""),
                                   "reasoning_content": choice.reasoning or None}
        if calls:
            message["tool_calls"] = calls
        entry: dict[str, Any] = {"index": index, "message": message,
                                 "logprobs": {"content": chat_logprobs(choice.logprobs, texts)} if body.logprobs else None,
                                 "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason}
        if body.return_token_ids:
            entry["token_ids"] = choice.token_ids
        out.append(entry)
    response = {**meta, "object": "chat.completion", "choices": out,
                "usage": usage(len(prepared.prompt_ids), choices, max(c.cached_tokens for c in choices))}
    if body.return_token_ids:
        response["prompt_token_ids"] = prepared.prompt_ids
    return response


async def _stream(state: ServerState, body: ChatCompletionRequest, prepared: PreparedChat,
                  handles: list[RequestHandle], choices: list[ChatChoice], meta: dict[str, Any]) -> AsyncIterator[str]:
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    texts = TokenTexts(state.tokenizer)

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs=None, token_ids=None) -> str:
        entry = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return choice_chunk(meta, "chat.completion.chunk", entry, choices[index].stop_reason, token_ids, include_usage)

    try:
        for index in range(len(choices)):
            yield chunk(index, {"role": "assistant", "content": ""})
        async for index, output in merge_outputs(handles, state.deadline()):
            failure = engine_failure(output)
            if failure is not None:
                yield sse(failure.body())
                yield DONE
                return
            delta = choices[index].feed(output)
            finish = choices[index].finish_reason if output.finish_reason is not None else None
            logprobs = ({"content": chat_logprobs(output.logprobs or [], texts)} if body.logprobs else None)
            if delta or finish or logprobs or body.return_token_ids:
                yield chunk(index, delta, finish, logprobs, output.token_ids if body.return_token_ids else None)
        if include_usage:
            yield sse({**meta, "object": "chat.completion.chunk", "choices": [],
                       "usage": usage(len(prepared.prompt_ids), choices, max(c.cached_tokens for c in choices))})
        yield DONE
    except TimeoutError:
        yield sse(timeout_error(state.settings.request_timeout).body())
        yield DONE
    finally:
        state.abort(handles)
