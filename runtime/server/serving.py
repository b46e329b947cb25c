"""What both generation endpoints share: body reading, model names, limits, sampling parameters,
submitting to the engine, and waiting on it under a deadline and client disconnects."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from qwen35.runtime.engine.async_engine import AsyncEngine, GenerationOutput, QueueFull, RequestHandle
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.server.errors import APIError, bad_request, from_validation_error
from qwen35.runtime.server.metrics import ServerMetrics
from qwen35.runtime.server.settings import ServerSettings

Body = TypeVar("Body", bound=BaseModel)


def request_id(prefix: str) -> str:
    """An OpenAI-style response id, e.g. chatcmpl-3f2a..."""
    return f"{prefix}-{uuid.uuid4().hex}"


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object; 413 past `limit` bytes, 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body is {declared} bytes; this server accepts at most {limit}.",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"The request body is not valid JSON: {error}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {type(data).__name__}.", code="invalid_json")
    return data


def parse_body(model: type[Body], data: dict[str, Any]) -> Body:
    """Validate a JSON object against a request model; 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None


@dataclass
class ServerState:
    """The engine, tokenizer, settings and metrics one app serves."""

    engine: AsyncEngine
    tokenizer: Any
    settings: ServerSettings
    metrics: ServerMetrics

    @property
    def model_name(self) -> str:
        """The first served name: what responses report."""
        return self.settings.served_model_names[0]

    def check_model(self, name: str | None) -> str:
        """The served name a request addresses; 404 for a name this server does not serve."""
        if name is None or name in self.settings.served_model_names:
            return name or self.model_name
        raise APIError(404, f"The model `{name}` does not exist. This server serves: "
                            f"{', '.join(self.settings.served_model_names)}.", param="model", code="model_not_found")

    def resolve_max_tokens(self, requested: int | None, prompt_len: int, param: str = "max_tokens",
                           prompt_param: str = "prompt") -> int:
        """max_tokens checked against the context (default: the rest of the context)."""
        limit = self.settings.max_model_len
        if prompt_len >= limit:
            raise bad_request(f"This model's maximum context length is {limit} tokens. However, your prompt "
                              f"has {prompt_len} tokens, leaving no room for a completion. Please reduce the "
                              f"length of the prompt.", prompt_param, "context_length_exceeded")
        if requested is None:
            return limit - prompt_len
        if requested < 1:
            raise bad_request(f"Invalid value for '{param}': must be at least 1, got {requested}.", param,
                              "invalid_value")
        if prompt_len + requested > limit:
            raise bad_request(f"This model's maximum context length is {limit} tokens. However, you requested "
                              f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                              f"completion). Please reduce the prompt or {param}.", param, "context_length_exceeded")
        return requested

    def sampling_params(self, body: Any, max_tokens: int, logprobs: int | None) -> list[SamplingParams]:
        """One SamplingParams per choice (seed + index for n > 1); 400 on out-of-range values."""
        if body.n < 1 or body.n > self.settings.max_n:
            raise bad_request(f"Invalid value for 'n': must be between 1 and {self.settings.max_n} on this "
                              f"server, got {body.n}.", "n", "invalid_value")
        fields = {}
        for key in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                    "repetition_penalty"):
            value = getattr(body, key)
            if value is None:
                value = self.settings.sampling_defaults.get(key)
            if value is not None:
                fields[key] = value
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        choices = []
        for index in range(body.n):
            params = SamplingParams(**fields, seed=None if body.seed is None else body.seed + index,
                                    max_tokens=max_tokens, stop=stop, stop_token_ids=list(body.stop_token_ids or []),
                                    ignore_eos=body.ignore_eos, logprobs=logprobs)
            try:
                params.validate()
            except ValueError as error:
                name = str(error).split(":", 1)[0]
                raise bad_request(f"Invalid value for '{name}': {str(error).split(': ', 1)[-1]}.", name,
                                  "invalid_value") from None
            choices.append(params)
        return choices

    def encode(self, text: str) -> list[int]:
        """Token ids of prompt text."""
        return self.tokenizer.encode(text)

    def submit(self, prompt_ids: list[int], params: list[SamplingParams],
               skip_special_tokens: bool = True, media: MediaInputs | None = None) -> list[RequestHandle]:
        """Queue the choices (with the prompt's images and videos); 503 with Retry-After when the queue is full."""
        try:
            if media is None:
                return self.engine.submit(prompt_ids, params, skip_special_tokens=skip_special_tokens)
            return self.engine.submit(prompt_ids, params, skip_special_tokens=skip_special_tokens, media=media)
        except QueueFull as error:
            raise APIError(503, f"The server is busy ({error}); retry shortly.", code="queue_full",
                           headers={"Retry-After": str(self.settings.retry_after_seconds)}) from None
        except ValueError as error:
            raise bad_request(str(error)) from None

    def deadline(self) -> float | None:
        """Monotonic time at which a request arriving now times out."""
        timeout = self.settings.request_timeout
        return None if timeout is None else time.monotonic() + timeout

    def abort(self, handles: list[RequestHandle]) -> None:
        """Abort every unfinished handle, counting it as aborted."""
        for handle in handles:
            if not handle.done:
                self.metrics.aborted.inc()
                handle.abort()


def usage(prompt_tokens: int, choices, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object for a response whose choices carry their generated token_ids; cached_tokens:
    the prompt tokens the prefix cache served."""
    completion_tokens = sum(len(choice.token_ids) for choice in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def timeout_error(seconds: float | None) -> APIError:
    """A 504 for a request that ran past its deadline."""
    return APIError(504, f"The request did not finish within {seconds} seconds (--request-timeout).",
                    code="timeout")


def engine_failure(output: GenerationOutput) -> APIError | None:
    """A 500/503 for an output that ended in an engine error or shutdown, else None."""
    if output.finish_reason == "error":
        return APIError(500, output.error or "generation failed", code="engine_error", error_type="server_error")
    if output.finish_reason == "abort" and output.error:
        return APIError(503, output.error, code="shutting_down")
    return None


async def merge_outputs(handles: list[RequestHandle], deadline: float | None) -> AsyncIterator[tuple[int, GenerationOutput]]:
    """(choice index, output) from every handle as they arrive; TimeoutError past the deadline."""
    queue: asyncio.Queue[tuple[int, GenerationOutput | None]] = asyncio.Queue()

    async def pump(index: int, handle: RequestHandle) -> None:
        async for output in handle:
            queue.put_nowait((index, output))
        queue.put_nowait((index, None))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    open_streams = len(handles)
    try:
        while open_streams:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            index, output = await asyncio.wait_for(queue.get(), remaining)
            if output is None:
                open_streams -= 1
            else:
                yield index, output
    finally:
        for task in tasks:
            task.cancel()


async def until_disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Return when the client goes away (the body must already be read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def collect(state: ServerState, request: Request, handles: list[RequestHandle],
                  consume: Callable[[int, GenerationOutput], None]) -> None:
    """Feed every output to `consume`; abort on timeout (504) or when the client disconnects."""
    deadline = state.deadline()

    async def run() -> None:
        async for index, output in merge_outputs(handles, deadline):
            failure = engine_failure(output)
            if failure is not None:
                raise failure
            consume(index, output)

    work = asyncio.create_task(run())
    watcher = asyncio.create_task(until_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            # Nobody will read the answer; 499 (nginx's "client closed request") marks it in metrics.
            raise APIError(499, "The client closed the connection before the answer was ready.",
                           code="client_closed")
        try:
            work.result()
        except TimeoutError:
            raise timeout_error(state.settings.request_timeout) from None
    finally:
        for task in (work, watcher):
            task.cancel()
        state.abort(handles)
