"""What the engine hands back per sequence and step, and the per-sequence state that makes it.

`Generation` turns sampled token ids into `GenerationOutput`s: detokenization, stop tokens
and stop strings, max_tokens. It lives in the engine thread; outputs cross to the event loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qwen35.runtime.engine.detokenize import IncrementalDetokenizer, StopMatcher
from qwen35.runtime.engine.multimodal import RequestMedia
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.scheduler import Sequence


@dataclass
class TokenLogprob:
    """A generated token's raw logprob and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class GenerationOutput:
    """What one step adds to one sequence; the last one of a sequence has a finish_reason."""

    token_ids: list[int]
    text: str
    num_prompt_tokens: int
    num_generated_tokens: int  # so far, this step's included
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # stop, length, abort, error
    stop_reason: int | str | None = None  # the stop token id or string that matched
    error: str | None = None


class Generation:
    """Worker-side progress of one sequence: detokenizer, stop matching, finish decision."""

    def __init__(self, seq: Sequence, params: SamplingParams, stop_ids: frozenset[int],
                 detokenizer: IncrementalDetokenizer | None):
        self.seq = seq
        self.params = params
        self.stop_ids = stop_ids
        self.detokenizer = detokenizer
        self.matcher = StopMatcher(params.stop)
        self.media: RequestMedia | None = None  # images/videos of the prompt, until its prefill completes

    def add(self, token_id: int, logprob: TokenLogprob | None) -> GenerationOutput:
        """Take one sampled token; return the step's output for this sequence."""
        seq = self.seq
        seq.output_ids.append(token_id)
        text, finish, stop_reason = "", None, None
        if token_id in self.stop_ids:
            finish, stop_reason = "stop", token_id
        elif self.detokenizer is not None:
            text = self.matcher.feed(self.detokenizer.feed(token_id))
            if self.matcher.stopped:
                finish, stop_reason = "stop", self.matcher.matched
        if finish is None and len(seq.output_ids) >= seq.max_tokens:
            finish = "length"
        if finish is not None and self.detokenizer is not None and not self.matcher.stopped:
            text += self.matcher.feed(self.detokenizer.flush())
            text += self.matcher.flush()
            if self.matcher.stopped:
                finish, stop_reason = "stop", self.matcher.matched
        return GenerationOutput([token_id], text, len(seq.prompt_ids), len(seq.output_ids),
                                [logprob] if logprob is not None else None, finish, stop_reason)
