"""The serving engine: one thread steps an LLMEngine for every client, outputs go to asyncio streams.

The engine thread runs `LLMEngine.step` (schedule -> run -> postprocess) and goes straight on
to the next step. The asyncio side (HTTP, the request handles) only submits, aborts and
receives: each step's outputs reach it through one `call_soon_threadsafe`, so handing them to
clients overlaps the next step's model work instead of adding to it. The LLMEngine's lock
guards the books; an abort that arrives while its sequence is in the step in flight takes
effect when the step returns, so a slot is never freed under the model's feet.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from qwen35.runtime.engine.grammar.compiler import CompiledGrammar
from qwen35.runtime.engine.grammar.constraints import Constraint
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.outputs import GenerationOutput, TokenLogprob
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.scheduler import QueueFull
from qwen35.runtime.engine.sequence import Sequence as EngineSequence

logger = logging.getLogger("qwen35.engine")

__all__ = ["AsyncEngine", "EngineObserver", "GenerationOutput", "QueueFull", "RequestHandle", "TokenLogprob"]


class EngineObserver(Protocol):
    """Receives per-token timings and counts (the server's metrics implement it)."""

    def on_prompt(self, num_tokens: int, num_cached: int) -> None:
        """A prompt of num_tokens has been prefilled; num_cached of them came from the prefix cache."""

    def on_token(self, seconds_since_previous: float, first: bool) -> None:
        """A token was delivered: time since arrival (first) or since the previous token."""

    def on_speculation(self, drafted: int, accepted: int) -> None:
        """A speculative step proposed `drafted` draft tokens and accepted `accepted` of them."""


class RequestHandle:
    """One sequence's stream of GenerationOutputs; iterate it, or abort it."""

    def __init__(self, engine: AsyncEngine, seq: EngineSequence):
        self.engine = engine
        self.seq = seq
        self.arrival = time.monotonic()
        self.last_token_time: float | None = None
        self.done = False  # the engine has sent the last output (it may still sit in the queue)
        self.finished = False  # the reader has taken the last output
        self._outputs: asyncio.Queue[GenerationOutput] = asyncio.Queue()

    @property
    def seq_id(self) -> int:
        """The engine's id for this sequence."""
        return self.seq.seq_id

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self

    async def __anext__(self) -> GenerationOutput:
        if self.finished and self._outputs.empty():
            raise StopAsyncIteration
        output = await self._outputs.get()
        if output.finish_reason is not None:
            self.finished = True
        return output

    def abort(self) -> None:
        """Stop generating and free the sequence's slot (no-op once finished)."""
        self.engine.abort(self)

    def _put(self, output: GenerationOutput) -> None:
        if output.finish_reason is not None:
            self.done = True
        self._outputs.put_nowait(output)


class AsyncEngine:
    """An LLMEngine stepped in its own thread; `submit` sequences, iterate their handles."""

    def __init__(self, engine: LLMEngine, observer: EngineObserver | None = None):
        self.engine = engine
        self.observer = observer
        self._handles: dict[int, RequestHandle] = {}
        self._work = threading.Condition(engine.lock)  # the engine thread sleeps on it when idle
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def config(self):
        """The engine's EngineConfig."""
        return self.engine.config

    @property
    def vocab_size(self) -> int:
        """Token ids below this are valid prompt tokens."""
        return self.engine.runner.vocab_size

    @property
    def is_running(self) -> bool:
        """Whether the engine thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def num_running(self) -> int:
        """Sequences holding a state slot."""
        return self.engine.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        """Sequences queued for a slot."""
        return self.engine.scheduler.num_waiting

    @property
    def kv_cache_usage(self) -> float:
        """Share of the KV pool's pages held by running sequences."""
        return self.engine.scheduler.kv_cache_usage

    async def start(self) -> None:
        """Start the engine thread; outputs are delivered on the running event loop."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="qwen35-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the engine thread (after the step in flight), end every open stream with an abort."""
        if self._thread is None:
            return
        with self._work:
            self._stopping = True
            self._work.notify()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        await asyncio.sleep(0)  # outputs the last step posted are delivered before the aborts
        self._deliver(self._settle(self.engine.end_all("abort", "the server is shutting down")), time.monotonic())

    def compile(self, constraint: Constraint) -> tuple[CompiledGrammar, bool]:
        """The constraint's compiled grammar and whether this call compiled it (thread-safe; GrammarError)."""
        return self.engine.compile(constraint)

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ValueError if a prompt plus max_tokens can never be served."""
        self.engine.check_fits(prompt_len, max_tokens)

    def submit(self, prompt_ids: Sequence[int], params: Sequence[SamplingParams], skip_special_tokens: bool = True,
               media: MediaInputs | None = None) -> list[RequestHandle]:
        """Queue one sequence per SamplingParams, all or none (QueueFull, ValueError); call on the loop."""
        if not self.is_running:
            raise RuntimeError("the engine is not running: await engine.start() first")
        with self._work:  # registered before the engine thread can step them
            sequences = self.engine.add_request(prompt_ids, params, media, skip_special_tokens)
            handles = [RequestHandle(self, seq) for seq in sequences]
            self._handles.update((handle.seq_id, handle) for handle in handles)
            self._work.notify()
        return handles

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationOutput]:
        """Submit one sequence and yield its outputs; leaving early aborts it."""
        (handle,) = self.submit(prompt_ids, [params])
        try:
            async for output in handle:
                yield output
        finally:
            handle.abort()

    def abort(self, handle: RequestHandle) -> None:
        """End a sequence early; its slot is freed now, or when the step in flight returns."""
        with self._work:
            if handle.done:
                return
            output = self.engine.abort(handle.seq)
            if output is not None:
                self._handles.pop(handle.seq_id, None)
                handle._put(output)
            self._work.notify()  # freed pages and slots: waiting sequences may fit now

    def _run(self) -> None:
        """The engine thread; if it ever dies, every open stream ends with an error instead of hanging."""
        try:
            self._step_until_stopped()
        except BaseException as failure:
            logger.exception("the engine thread stopped")
            with self._work:
                self._stopping = True
            self._post(self.engine.end_all("error", f"the engine stopped: {failure}"))

    def _step_until_stopped(self) -> None:
        """Step while there is work, sleep on the condition when there is none."""
        while True:
            with self._work:
                while not (self._stopping or self.engine.has_work):
                    self._work.wait()
                if self._stopping:
                    return
            drafted, accepted = self.engine.draft_tokens, self.engine.accepted_tokens
            results = self.engine.step()
            if self.observer is not None and self.engine.draft_tokens > drafted:
                self.observer.on_speculation(self.engine.draft_tokens - drafted, self.engine.accepted_tokens - accepted)
            if results and not self._post(results):
                return

    def _post(self, results: list[tuple[EngineSequence, GenerationOutput]]) -> bool:
        """Hand outputs to the event loop from the engine thread; False once the loop is closed."""
        deliveries = self._settle(results)
        try:
            self._loop.call_soon_threadsafe(self._deliver, deliveries, time.monotonic())
        except RuntimeError:  # the loop is closed: nobody is left to read the streams
            return False
        return True

    def _settle(self, results: list[tuple[EngineSequence, GenerationOutput]]) -> list[tuple[RequestHandle, GenerationOutput]]:
        """The handle of each output; a sequence's handle is forgotten with its last output."""
        deliveries = []
        with self._work:
            for seq, output in results:
                handle = self._handles.get(seq.seq_id)
                if handle is None:
                    continue
                if output.finish_reason is not None:
                    del self._handles[seq.seq_id]
                deliveries.append((handle, output))
        return deliveries

    def _deliver(self, deliveries: list[tuple[RequestHandle, GenerationOutput]], now: float) -> None:
        """On the event loop: hand each output to its stream; timings to the observer."""
        for handle, output in deliveries:
            if handle.done:  # an abort already ended the stream (it came in before this step's outputs)
                continue
            if self.observer is not None and output.token_ids:
                first = handle.last_token_time is None
                if first:
                    self.observer.on_prompt(output.num_prompt_tokens, output.num_cached_tokens)
                self.observer.on_token(now - (handle.arrival if first else handle.last_token_time), first)
            if output.token_ids:
                handle.last_token_time = now
            handle._put(output)
