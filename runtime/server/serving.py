"""What both generation endpoints share: model names, limits, sampling parameters, tokenizing,
submitting to the engine, and waiting on it under a deadline and client disconnects.

Tokenization runs in a worker thread through the tokenizer's batch call, which releases the
GIL, so a 30 MB prompt never stalls /health or other clients' streams.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from qwen35.runtime.engine.async_engine import AsyncEngine, GenerationOutput, QueueFull, RequestHandle
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.sampling import MAX_LOGIT_BIAS_ENTRIES, SamplingParams
from qwen35.runtime.server.errors import APIError, bad_request, client_closed
from qwen35.runtime.server.metrics import ServerMetrics
from qwen35.runtime.server.settings import ServerSettings

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256  # the stop matcher's work per token grows with the stop strings' lengths


def request_id(prefix: str) -> str:
    """An OpenAI-style response id, e.g. chatcmpl-3f2a..."""
    return f"{prefix}-{uuid.uuid4().hex}"


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
        """max_tokens checked against the context (default: the server's default_max_tokens, at most the rest of
        the context)."""
        limit = self.settings.max_model_len
        if prompt_len >= limit:
            raise bad_request(f"This model's maximum context length is {limit} tokens. However, your prompt "
                              f"has {prompt_len} tokens, leaving no room for a completion. Please reduce the "
                              f"length of the prompt.", prompt_param, "context_length_exceeded")
        if requested is None:
            return min(self.settings.default_max_tokens or limit, limit - prompt_len)
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
        if len(stop) > MAX_STOP_STRINGS or any(len(text) > MAX_STOP_CHARS for text in stop):
            raise bad_request(f"Invalid value for 'stop': at most {MAX_STOP_STRINGS} strings of at most "
                              f"{MAX_STOP_CHARS} characters each.", "stop", "invalid_value")
        vocab = self.engine.vocab_size
        stop_token_ids = list(body.stop_token_ids or [])
        if not all(0 <= token < vocab for token in stop_token_ids):
            raise bad_request(f"Invalid value for 'stop_token_ids': token ids must be in [0, {vocab}).",
                              "stop_token_ids", "invalid_value")
        logit_bias = self.logit_bias(body.logit_bias)
        choices = []
        for index in range(body.n):
            params = SamplingParams(**fields, seed=None if body.seed is None else body.seed + index,
                                    max_tokens=max_tokens, stop=stop, stop_token_ids=stop_token_ids,
                                    ignore_eos=body.ignore_eos, logprobs=logprobs, logit_bias=logit_bias)
            try:
                params.validate()
            except ValueError as error:
                name = str(error).split(":", 1)[0]
                raise bad_request(f"Invalid value for '{name}': {str(error).split(': ', 1)[-1]}.", name,
                                  "invalid_value") from None
            choices.append(params)
        return choices

    def logit_bias(self, requested: dict[str, float] | None) -> dict[int, float]:
        """OpenAI's logit_bias (token id strings -> bias) as SamplingParams takes it; 400 naming a bad key."""
        if not requested:
            return {}
        if self.engine.config.speculative_tokens:
            # Speculative verification builds its distributions without the bias.
            raise bad_request("'logit_bias' is not supported while this server runs speculative decoding.",
                              "logit_bias", "unsupported_value")
        if len(requested) > MAX_LOGIT_BIAS_ENTRIES:
            raise bad_request(f"Invalid value for 'logit_bias': at most {MAX_LOGIT_BIAS_ENTRIES} entries, got "
                              f"{len(requested)}.", "logit_bias", "invalid_value")
        vocab = self.engine.vocab_size
        bias = {}
        for key, value in requested.items():
            if not (key.isascii() and key.isdigit() and len(key) <= 10 and int(key) < vocab):
                raise bad_request(f"Invalid value for 'logit_bias': the key {key[:20]!r} is not a token id in "
                                  f"[0, {vocab}).", "logit_bias", "invalid_value")
            bias[int(key)] = value
        return bias

    def check_capacity(self, sequences: int, param: str) -> None:
        """400 for a request of more sequences than the engine can ever hold (running plus queued)."""
        capacity = self.engine.config.max_running_requests + self.engine.config.max_queue
        if sequences > capacity:
            raise bad_request(f"Invalid value for '{param}': the request asks for {sequences} sequences, and this "
                              f"server holds at most {capacity} at once; split it into smaller requests.", param,
                              "too_many_sequences")

    async def encode(self, text: str) -> list[int]:
        """Token ids of prompt text, from a worker thread: the tokenizer's batch call releases the GIL."""
        (ids,) = await asyncio.to_thread(self.tokenizer.encode_batch, [text])
        return ids

    def submit(self, prompt_ids: list[int], params: list[SamplingParams],
               skip_special_tokens: bool = True, media: MediaInputs | None = None) -> list[RequestHandle]:
        """Queue the choices (with the prompt's images and videos); 503 with Retry-After when the queue is full,
        503 once the server is shutting down."""
        if not self.engine.is_running:
            raise APIError(503, "The server is shutting down.", code="shutting_down")
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
            raise client_closed()
        try:
            work.result()
        except TimeoutError:
            raise timeout_error(state.settings.request_timeout) from None
    finally:
        for task in (work, watcher):
            task.cancel()
        state.abort(handles)
