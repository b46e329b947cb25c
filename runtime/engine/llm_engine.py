"""The engine: one step is schedule -> run -> postprocess, for the server, the offline LLM and the benchmarks.

`LLMEngine` is synchronous and single-threaded at heart: `add_request` queues sequences,
`step` runs one batch and returns what each sequence gained. The async server engine drives
this same step from its own thread (async_engine.py); the offline `LLM` is this class. The
lock only guards the books (scheduler) against submits and aborts from another thread: the
model runs outside it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence as Seq
from itertools import count
from typing import Protocol

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.detokenize import IncrementalDetokenizer
from qwen35.runtime.engine.grammar.compiler import CompiledGrammar, GrammarCompiler
from qwen35.runtime.engine.grammar.constraints import Constraint, GrammarError
from qwen35.runtime.engine.grammar.matcher import opens_reasoning
from qwen35.runtime.engine.multimodal import MediaInputs, RequestMedia
from qwen35.runtime.engine.outputs import GenerationOutput
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.scheduler import ScheduledBatch, Scheduler, StepOutput
from qwen35.runtime.engine.sequence import Sequence, Status

logger = logging.getLogger("qwen35.engine")

# <|endoftext|> and <|im_end|>: every Qwen3.5 checkpoint stops on both.
DEFAULT_STOP_TOKEN_IDS = (248044, 248046)


class Runner(Protocol):
    """What the engine needs from the model side (engine/runner.py's ModelRunner; tests script their own)."""

    num_slots: int  # state slots: the most sequences that run at once
    num_pages: int  # KV pages of config.page_size tokens
    vocab_size: int  # the logits' width (token ids below it are valid)
    takes_media: bool  # whether prompts may carry images and videos
    media_pad_ids: dict[str, int]  # image / video pad token ids, which only media may fill

    def run(self, batch: ScheduledBatch) -> StepOutput:
        """Run the batch's prompt chunks and decodes; the sampled tokens of batch.sampled."""


class LLMEngine:
    """A runner, the scheduler that owns the books, and the tokenizer that turns tokens into text."""

    def __init__(self, runner: Runner, config: EngineConfig, tokenizer=None, eos_token_ids: Seq[int] = (),
                 grammars: GrammarCompiler | None = None):
        self.runner = runner
        self.config = config
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.scheduler = Scheduler(config, runner.num_slots, runner.num_pages)
        self.lock = threading.RLock()
        self.steps = 0
        self.draft_tokens = 0  # speculation: drafts proposed and accepted so far
        self.accepted_tokens = 0
        self._ids = count()
        self._in_flight: ScheduledBatch | None = None
        self._grammars = grammars  # None: made on the first constraint (a ~2 s token trie over the tokenizer)
        self._grammars_lock = threading.Lock()

    @property
    def takes_media(self) -> bool:
        """Whether requests may carry images and videos."""
        return self.runner.takes_media

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return self.scheduler.has_work

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ValueError if a prompt plus max_tokens can never be served."""
        self.scheduler.check_fits(prompt_len, max_tokens)

    @property
    def grammars(self) -> GrammarCompiler:
        """The grammar compiler over this engine's tokenizer and logits width (GrammarError without a tokenizer)."""
        with self._grammars_lock:
            if self._grammars is None:
                if self.tokenizer is None:
                    raise GrammarError("constrained output needs the engine's tokenizer", "constraint")
                stops = self.eos_token_ids or frozenset(self.tokenizer.eos_token_ids)
                self._grammars = GrammarCompiler.for_tokenizer(self.tokenizer, self.runner.vocab_size, stops)
            return self._grammars

    def compile(self, constraint: Constraint) -> tuple[CompiledGrammar, bool]:
        """The constraint's compiled grammar (cached) and whether this call compiled it; GrammarError if it cannot."""
        return self.grammars.compile(constraint)

    def add_request(self, prompt_ids: Seq[int], params: Seq[SamplingParams], media: MediaInputs | None = None,
                    skip_special_tokens: bool = True) -> list[Sequence]:
        """Queue one sequence per SamplingParams, all or none (QueueFull, ValueError).

        `media`: the prompt's preprocessed images and videos (prompt ids already expanded to one
        pad per embedding), embedded once and shared by the choices. A choice whose params carry a
        constraint follows its grammar (compiled here unless cached; GrammarError if it cannot be).
        """
        prompt = [int(t) for t in prompt_ids]
        if media is not None and media.num_items and not self.takes_media:
            raise ValueError("this engine takes text only: send no images or videos")
        shared = RequestMedia(media) if media is not None and media.num_items else None
        if shared is None:
            self._check_no_pads(prompt)
        for p in params:
            p.validate()
        sequences = [self._new_sequence(prompt, p, skip_special_tokens, shared) for p in params]
        with self.lock:
            self.scheduler.add(sequences)
        return sequences

    def abort(self, seq: Sequence) -> GenerationOutput | None:
        """End a sequence early: its last output when it ends now; None when it had ended, or ends with the
        step in flight (whose outputs then carry its abort)."""
        with self.lock:
            if seq.status is Status.FINISHED or seq.aborted:
                return None
            if self._in_flight is not None and seq in self._in_flight.sequences:
                seq.aborted = True
                return None
            self.scheduler.finish(seq)
            return seq.ended("abort")

    def step(self) -> list[tuple[Sequence, GenerationOutput]]:
        """Schedule, run the model and sample, then append tokens and retire what ended.

        A step that fails ends its own sequences with finish_reason "error" (their cache state is
        not trusted any more); the engine and every other sequence carry on.
        """
        with self.lock:
            batch = self.scheduler.schedule()
            if batch.empty:
                return []
            self._in_flight = batch
        try:
            output = self.runner.run(batch)
        except Exception as failure:
            logger.exception("engine step failed")
            with self.lock:
                self._in_flight = None
                ended = [(seq, seq.ended("abort" if seq.aborted else "error", f"engine step failed: {failure}"))
                         for seq in batch.sequences if seq.status is not Status.FINISHED]
                for seq, _ in ended:
                    self.scheduler.finish(seq)
                return ended
        with self.lock:
            self._in_flight = None
            self.steps += 1
            self.draft_tokens += output.num_drafted
            self.accepted_tokens += output.num_accepted
            return self.scheduler.postprocess(batch, output)

    def end_all(self, reason: str, error: str | None = None) -> list[tuple[Sequence, GenerationOutput]]:
        """Retire every live sequence (shutdown, a dead engine thread); their last outputs."""
        with self.lock:
            live = list(self.scheduler.waiting) + list(self.scheduler.running)
            for seq in live:
                self.scheduler.finish(seq)
            return [(seq, seq.ended(reason, error)) for seq in live]

    def _new_sequence(self, prompt: list[int], params: SamplingParams, skip_special_tokens: bool,
                      media: RequestMedia | None) -> Sequence:
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
        detokenizer = (IncrementalDetokenizer(self.tokenizer.backend, skip_special_tokens)
                       if self.tokenizer is not None else None)
        seq = Sequence(next(self._ids), prompt, params, stop_ids, detokenizer, media)
        if params.constraint is not None:
            seq.grammar = self.compile(params.constraint)[0].matcher(in_reasoning=opens_reasoning(prompt),
                                                                     budget=params.max_tokens)
        return seq

    def _check_no_pads(self, prompt: list[int]) -> None:
        """A prompt without media must not hold image or video pads: nothing would fill them."""
        for kind, token_id in self.runner.media_pad_ids.items():
            if token_id in prompt:
                raise ValueError(f"the prompt holds {kind} pad tokens (id {token_id}) but no {kind}s: send the "
                                 f"{kind} as a content part, or drop the pad tokens")
