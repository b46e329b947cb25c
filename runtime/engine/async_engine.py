"""The serving engine: one thread batches every client's sequences through the model.

Each step is schedule -> run the model (prompt chunks, then one batched decode) -> sample
-> detokenize, in the engine's own thread, which goes straight on to the next step. The
asyncio side (HTTP, the request handles) only submits, aborts and receives: each step's
outputs reach it through one `call_soon_threadsafe`, so handing them to clients overlaps
the next step's model work instead of adding to it.

One lock guards the scheduler and the bookkeeping of live sequences; the model, the sampler
state and the runner's pools belong to the engine thread alone. An abort that arrives while
its sequence is in the step in flight takes effect when the step returns, so a row is never
freed under the model's feet.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Protocol

from qwen35.runtime.engine.detokenize import IncrementalDetokenizer
from qwen35.runtime.engine.multimodal import MediaInputs, RequestMedia
from qwen35.runtime.engine.outputs import Generation, GenerationOutput, TokenLogprob
from qwen35.runtime.engine.runner import ModelRunner, takes_media
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.scheduler import QueueFull, Scheduler, SchedulerConfig, StepPlan
from qwen35.runtime.engine.scheduler import Sequence as ScheduledSequence
from qwen35.runtime.engine.scheduler import Status
from qwen35.runtime.engine.step_executor import StepExecutor

logger = logging.getLogger("qwen35.engine")

__all__ = ["AsyncEngine", "EngineConfig", "EngineObserver", "GenerationOutput", "QueueFull",
           "RequestHandle", "TokenLogprob"]


@dataclass
class EngineConfig:
    """Engine capacity: concurrent sequences (cache rows), queue bound, context, prefill chunking."""

    max_running_requests: int = 16
    max_queue: int = 256
    max_model_len: int = 4096
    prefill_chunk_size: int = 256
    max_prefill_tokens: int = 512
    seed: int = 0
    speculative_tokens: int = 0  # MTP draft tokens per decode step (0: off); needs a SpeculativeRunner

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's view of these limits."""
        return SchedulerConfig(max_running=self.max_running_requests, max_waiting=self.max_queue,
                               max_model_len=self.max_model_len, prefill_chunk_size=self.prefill_chunk_size,
                               max_prefill_tokens=self.max_prefill_tokens)

    def scheduler_config_for(self, runner: ModelRunner) -> SchedulerConfig:
        """These limits plus the runner's KV page pool, when it has one smaller than rows x context."""
        config = self.scheduler_config()
        blocks = getattr(runner, "blocks", None)  # a paged runner's BlockManager
        if blocks is not None and blocks.num_pages < self.max_running_requests * blocks.max_pages_per_row:
            config.kv_pages, config.page_size = blocks.num_pages, blocks.page_size
            # A verify writes the last token and k drafts before rolling back to what it keeps.
            config.reserve_extra_tokens = self.speculative_tokens + 1 if self.speculative_tokens else 0
        return config


class EngineObserver(Protocol):
    """Receives per-token timings and counts (the server's metrics implement it)."""

    def on_prompt(self, num_tokens: int) -> None:
        """A prompt has been prefilled."""

    def on_token(self, seconds_since_previous: float, first: bool) -> None:
        """A token was delivered: time since arrival (first) or since the previous token."""

    # Optional: on_speculation(drafted, accepted), called after each speculative step.


class RequestHandle:
    """One sequence's stream of GenerationOutputs; iterate it, or abort it."""

    def __init__(self, engine: AsyncEngine, seq: ScheduledSequence):
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
        """Stop generating and free the sequence's row (no-op once finished)."""
        self.engine.abort(self)

    def _put(self, output: GenerationOutput) -> None:
        if output.finish_reason is not None:
            self.done = True
        self._outputs.put_nowait(output)


class AsyncEngine:
    """Continuous-batching engine over a ModelRunner; `submit` sequences, iterate their handles."""

    def __init__(self, runner: ModelRunner, tokenizer=None, config: EngineConfig | None = None,
                 eos_token_ids: Sequence[int] = (), observer: EngineObserver | None = None):
        self.runner = runner
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        if self.config.max_running_requests > runner.num_rows:
            raise ValueError(f"max_running_requests {self.config.max_running_requests} exceeds the "
                             f"runner's {runner.num_rows} cache rows")
        if self.config.max_model_len > runner.max_len:
            raise ValueError(f"max_model_len {self.config.max_model_len} exceeds the runner's {runner.max_len}")
        drafts = self.config.speculative_tokens
        if drafts and getattr(runner, "num_speculative_tokens", 0) != drafts:
            raise ValueError(f"speculative_tokens {drafts} needs a runner that drafts as many "
                             f"(SpeculativeRunner(model, ..., num_speculative_tokens={drafts}))")
        self.eos_token_ids = frozenset(eos_token_ids)
        self.scheduler = Scheduler(self.config.scheduler_config_for(runner))
        self.executor = StepExecutor(runner, self.config.seed, self.config.speculative_tokens,
                                     self._take_released_rows)
        self.observer = observer
        self.steps = 0
        self._ids = count()
        self._handles: dict[int, RequestHandle] = {}
        self._generations: dict[int, Generation] = {}
        self._pending_aborts: set[int] = set()
        # Rows whose sequence ended; a runner with release_row frees their pages and state slot at
        # the start of the next step, in the worker thread, before anything reuses them.
        self._released_rows: list[int] = []
        self._in_flight = False
        self._lock = threading.Lock()  # scheduler, _handles, _generations, aborts, released rows
        self._work = threading.Condition(self._lock)  # the engine thread sleeps on it when idle
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_running(self) -> bool:
        """Whether the engine thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def observer(self) -> EngineObserver | None:
        """Who receives token timings and speculation counts (settable, e.g. by the server's metrics)."""
        return self._observer

    @observer.setter
    def observer(self, observer: EngineObserver | None) -> None:
        self._observer = observer
        self.executor.observer = observer  # speculation counts are reported from the engine thread

    @property
    def draft_tokens(self) -> int:
        """Speculation: draft tokens proposed so far."""
        return self.executor.draft_tokens

    @property
    def accepted_tokens(self) -> int:
        """Speculation: draft tokens accepted so far."""
        return self.executor.accepted_tokens

    @property
    def kv_cache_usage(self) -> float:
        """Share of the paged KV pool's pages holding tokens (0 for runners without a page pool)."""
        blocks = getattr(self.runner, "blocks", None)
        return 1 - blocks.num_free_pages / blocks.num_pages if blocks is not None else 0.0

    @property
    def num_running(self) -> int:
        """Sequences holding a cache row."""
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        """Sequences queued for a row."""
        return self.scheduler.num_waiting

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
        for handle in list(self._handles.values()):
            self._retire(handle, "abort", "the server is shutting down")

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ValueError if a prompt plus max_tokens cannot fit the context."""
        self.scheduler.check_fits(prompt_len, max_tokens)

    def submit(self, prompt_ids: Sequence[int], params: Sequence[SamplingParams],
               skip_special_tokens: bool = True, media: MediaInputs | None = None) -> list[RequestHandle]:
        """Queue one sequence per SamplingParams, all or none (QueueFull); call on the loop.

        `media`: the prompt's preprocessed images and videos (prompt ids already expanded to one
        pad per embedding), embedded once and shared by the choices.
        """
        if not self.is_running:
            raise RuntimeError("the engine is not running: await engine.start() first")
        if media is not None and not takes_media(self.runner):
            raise ValueError("this engine's model runner takes text only: send no images or videos")
        shared_media = RequestMedia(media) if media is not None and media.num_items else None
        prompt = [int(t) for t in prompt_ids]
        for p in params:
            p.validate()
        sequences = [ScheduledSequence(next(self._ids), prompt, p.max_tokens) for p in params]
        handles, generations = [], []
        for seq, p in zip(sequences, params):
            stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else self.eos_token_ids)
            detokenizer = (IncrementalDetokenizer(self.tokenizer.backend, skip_special_tokens)
                           if self.tokenizer is not None else None)
            generation = Generation(seq, p, stop_ids, detokenizer)
            generation.media = shared_media
            generations.append(generation)
            handles.append(RequestHandle(self, seq))
        with self._work:
            self.scheduler.add(sequences)  # QueueFull: nothing registered
            for seq, generation, handle in zip(sequences, generations, handles):
                self._generations[seq.seq_id] = generation
                self._handles[seq.seq_id] = handle
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
        """End a sequence early; its row is freed now, or when the step in flight returns."""
        with self._work:
            if handle.done or handle.seq_id not in self._handles:
                return
            if self._in_flight and handle.seq.row is not None:
                self._pending_aborts.add(handle.seq_id)
                return
            self._retire(handle, "abort")
            self._work.notify()  # released rows, freed pages: the engine thread may have work

    def _finish(self, seq: ScheduledSequence) -> None:
        """Free seq's scheduler row; its runner-side pages follow at the next step. Under the lock."""
        if seq.row is not None and seq.status is not Status.FINISHED:
            self._released_rows.append(seq.row)
        self.scheduler.finish(seq)

    def _retire(self, handle: RequestHandle, reason: str, error: str | None = None) -> None:
        """End a live sequence with `reason`; on the event loop (it puts the last output)."""
        output = self._retire_locked(handle, reason, error)
        if output is not None:
            handle._put(output)

    def _retire_locked(self, handle: RequestHandle, reason: str,
                       error: str | None = None) -> GenerationOutput | None:
        """Drop a sequence from the scheduler and the books; its last output unless it already has one."""
        self._forget(handle)
        if handle.done:
            return None
        seq = handle.seq
        return GenerationOutput([], "", len(seq.prompt_ids), len(seq.output_ids), finish_reason=reason, error=error)

    def _forget(self, handle: RequestHandle) -> None:
        """Free the sequence's row and drop it from the books (under the lock)."""
        self._finish(handle.seq)
        self._handles.pop(handle.seq_id, None)
        self._generations.pop(handle.seq_id, None)

    def _post(self, deliveries: list[tuple[RequestHandle, GenerationOutput]]) -> bool:
        """Hand outputs to the event loop from the engine thread; False once the loop is closed."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, deliveries, time.monotonic())
        except RuntimeError:  # the loop is closed: nobody is left to read the streams
            return False
        return True

    def _take_released_rows(self) -> list[int]:
        """The rows whose sequences ended since the last call (the engine thread frees their pages)."""
        with self._lock:
            rows, self._released_rows = self._released_rows, []
        return rows

    def _run(self) -> None:
        """The engine thread; if it ever dies, every open stream ends with an error instead of hanging."""
        try:
            self._step_until_stopped()
        except BaseException as failure:
            logger.exception("the engine thread stopped")
            with self._work:
                self._stopping = True
                ended = [(handle, output) for handle in list(self._handles.values())
                         if (output := self._retire_locked(handle, "error", f"the engine stopped: {failure}"))]
            self._post(ended)

    def _step_until_stopped(self) -> None:
        """Step while there is work, sleep on the condition when there is none."""
        while True:
            with self._work:
                while not (self._stopping or self.scheduler.has_work or self._released_rows):
                    self._work.wait()
                if self._stopping:
                    return
                plan = self.scheduler.schedule()
                self._in_flight = True
            error = None
            try:
                if plan.empty:  # only released rows to hand back (going idle)
                    self.executor.release_rows()
                    results = []
                else:
                    results = self.executor.execute(plan, self._generations)
            except Exception as failure:  # a failed step fails its sequences, not the server
                logger.exception("engine step failed")
                results, error = [], failure
            deliveries = self._settle(plan, results, error)
            if deliveries and not self._post(deliveries):
                return

    def _settle(self, plan: StepPlan, results: list[tuple[int, GenerationOutput]],
                error: Exception | None) -> list[tuple[RequestHandle, GenerationOutput]]:
        """After a step, under the lock: retire what finished, failed or was aborted meanwhile."""
        deliveries = []
        with self._work:
            self._in_flight = False
            if not plan.empty:
                self.steps += 1
            if error is not None:
                for seq in [chunk.seq for chunk in plan.prefills] + plan.decodes:
                    handle = self._handles.get(seq.seq_id)
                    if handle is not None:
                        output = self._retire_locked(handle, "error", f"engine step failed: {error}")
                        deliveries += [(handle, output)] if output is not None else []
            for seq_id, output in results:
                handle = self._handles.get(seq_id)
                if handle is None or seq_id in self._pending_aborts:
                    continue
                if output.finish_reason is not None:
                    self._forget(handle)
                deliveries.append((handle, output))
            for seq_id in self._pending_aborts:
                handle = self._handles.get(seq_id)
                if handle is not None:
                    output = self._retire_locked(handle, "abort")
                    deliveries += [(handle, output)] if output is not None else []
            self._pending_aborts.clear()
        return deliveries

    def _deliver(self, deliveries: list[tuple[RequestHandle, GenerationOutput]], now: float) -> None:
        """On the event loop: hand each output to its stream; timings to the observer."""
        for handle, output in deliveries:
            if handle.done:  # an abort already ended the stream (it came in before this step's outputs)
                continue
            if self.observer is not None and output.token_ids:
                first = handle.last_token_time is None
                if first:
                    self.observer.on_prompt(output.num_prompt_tokens)
                self.observer.on_token(now - (handle.arrival if first else handle.last_token_time), first)
            if output.token_ids:
                handle.last_token_time = now
            handle._put(output)

