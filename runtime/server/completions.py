"""POST /v1/completions: raw prompts (text or token ids, one or a batch), streamed or whole; the output may be
constrained (response_format, regex, choice, structured_outputs) as in chat."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from qwen35.runtime.engine.async_engine import GenerationOutput, RequestHandle
from qwen35.runtime.server.errors import bad_request
from qwen35.runtime.server.logprobs import TokenTexts, completion_logprobs
from qwen35.runtime.server.protocol import CompletionRequest
from qwen35.runtime.server.request_body import parse_body, read_json_body
from qwen35.runtime.server.serving import (ServerState, collect, engine_failure, merge_outputs, request_id,
                                           timeout_error, usage)
from qwen35.runtime.server.structured_outputs import compile_constraint, request_constraint
from qwen35.runtime.server.streaming import DONE, EventStreamResponse, choice_chunk, sse


@dataclass
class _Choice:
    prompt_index: int
    echo: str = ""
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    cached_tokens: int = 0  # of the prompt, from the prefix cache

    def feed(self, output: GenerationOutput) -> None:
        self.cached_tokens = output.num_cached_tokens
        self.text += output.text
        self.token_ids.extend(output.token_ids)
        self.logprobs.extend(output.logprobs or [])
        if output.finish_reason is not None:
            self.finish_reason, self.stop_reason = output.finish_reason, output.stop_reason


def _cached(choices: list[_Choice]) -> int:
    """Prompt tokens the prefix cache served: per prompt, the most any of its choices reused."""
    best: dict[int, int] = {}
    for choice in choices:
        best[choice.prompt_index] = max(best.get(choice.prompt_index, 0), choice.cached_tokens)
    return sum(best.values())


async def _prompts(body: CompletionRequest, state: ServerState) -> list[tuple[list[int], str]]:
    """Each prompt's token ids and text (decoded from ids when ids were sent, and only for echo)."""
    prompt = body.prompt
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise bad_request("Invalid value for 'prompt': it is empty.", "prompt", "invalid_value")
    if len(prompt) > 1:  # one prompt's choices are checked as 'n'
        state.check_capacity(len(prompt) * max(body.n, 1), "prompt")
    vocab = state.engine.vocab_size
    out = []
    for index, item in enumerate(prompt):
        if isinstance(item, str):
            ids = await state.encode(item)
            text = item
        else:
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise bad_request(f"Invalid value for 'prompt': token ids {bad[:5]} are outside [0, {vocab}).",
                                  "prompt", "invalid_value")
            ids, text = list(item), state.tokenizer.decode(item) if body.echo else ""
        if not ids:
            raise bad_request(f"Invalid value for 'prompt': prompt {index} has no tokens.", "prompt", "invalid_value")
        out.append((ids, text))
    return out


async def create_completion(request: Request, state: ServerState):
    """Handle one completions request."""
    data = await read_json_body(request, state.settings.max_body_bytes, state.settings.body_timeout)
    body = parse_body(CompletionRequest, data)
    model = state.check_model(body.model)
    if body.suffix:
        raise bad_request("'suffix' is not supported by this server.", "suffix", "unsupported_value")
    if body.best_of is not None and body.best_of != body.n:
        raise bad_request("Invalid value for 'best_of': only best_of == n is supported.", "best_of", "unsupported_value")
    if body.echo and body.logprobs is not None:
        raise bad_request("'echo' together with 'logprobs' is not supported.", "echo", "unsupported_value")
    prompts = await _prompts(body, state)
    constraint = request_constraint(body)
    if constraint is not None:
        await compile_constraint(state, constraint)
    handles: list[RequestHandle] = []
    choices: list[_Choice] = []
    try:
        for prompt_index, (ids, text) in enumerate(prompts):
            max_tokens = state.resolve_max_tokens(body.max_tokens, len(ids))
            params = state.sampling_params(body, max_tokens, body.logprobs)
            for param in params:
                param.constraint = constraint
            handles += state.submit(ids, params, body.skip_special_tokens)
            choices += [_Choice(prompt_index, text if body.echo else "") for _ in params]
    except Exception:
        state.abort(handles)  # all prompts are queued, or none
        raise
    meta = {"id": request_id("cmpl"), "created": int(time.time()), "model": model}
    prompt_tokens = sum(len(ids) for ids, _ in prompts)
    if body.stream:
        return EventStreamResponse(_stream(state, body, handles, choices, meta, prompt_tokens))

    def consume(index: int, output: GenerationOutput) -> None:
        choices[index].feed(output)

    await collect(state, request, handles, consume)
    texts = TokenTexts(state.tokenizer)
    out = []
    for index, choice in enumerate(choices):
        entry: dict[str, Any] = {
            "index": index, "text": choice.echo + choice.text,
            "logprobs": completion_logprobs(choice.logprobs, texts, 0) if body.logprobs is not None else None,
            "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason}
        if body.return_token_ids:
            entry["token_ids"] = choice.token_ids
            entry["prompt_token_ids"] = prompts[choice.prompt_index][0]
        out.append(entry)
    return JSONResponse({**meta, "object": "text_completion", "choices": out, "usage": usage(prompt_tokens, choices, _cached(choices))})


async def _stream(state: ServerState, body: CompletionRequest, handles: list[RequestHandle], choices: list[_Choice],
                  meta: dict[str, Any], prompt_tokens: int) -> AsyncIterator[str]:
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    texts = TokenTexts(state.tokenizer)
    offsets = [0] * len(choices)

    def chunk(index: int, text: str, finish: str | None, logprobs, token_ids) -> str:
        entry = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return choice_chunk(meta, "text_completion", entry, choices[index].stop_reason, token_ids, include_usage)

    try:
        for index, choice in enumerate(choices):
            if choice.echo:
                yield chunk(index, choice.echo, None, None, None)
        async for index, output in merge_outputs(handles, state.deadline()):
            failure = engine_failure(output)
            if failure is not None:
                yield sse(failure.body())
                yield DONE
                return
            choice = choices[index]
            choice.feed(output)
            logprobs = None
            if body.logprobs is not None:
                logprobs = completion_logprobs(output.logprobs or [], texts, offsets[index])
                offsets[index] += len(output.text)
            finish = output.finish_reason
            if output.text or finish or logprobs or body.return_token_ids:
                yield chunk(index, output.text, finish, logprobs, output.token_ids if body.return_token_ids else None)
        if include_usage:
            yield sse({**meta, "object": "text_completion", "choices": [], "usage": usage(prompt_tokens, choices, _cached(choices))})
        yield DONE
    except TimeoutError:
        yield sse(timeout_error(state.settings.request_timeout).body())
        yield DONE
    finally:
        state.abort(handles)
