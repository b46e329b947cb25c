"""One generation stream, start to end: its tokens, where its cache lives, and how its output ends.

A Sequence is the engine's only record of a request choice. The scheduler writes its cache
placement (state slot, block table) and prefill progress; `append_token` turns each sampled id
into a GenerationOutput (detokenization, stop tokens and strings, max_tokens). Plain data: no
torch here, so the scheduler stays importable without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from qwen35.runtime.engine.detokenize import IncrementalDetokenizer, StopMatcher
from qwen35.runtime.engine.outputs import GenerationOutput, TokenLogprob

if TYPE_CHECKING:
    from qwen35.runtime.engine.sampling import SamplingParams


class Status(Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    PREFILLING = "prefilling"
    DECODING = "decoding"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A prompt, the tokens generated after it, and its place in the cache."""

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int] = frozenset()
    detokenizer: IncrementalDetokenizer | None = None
    media: Any = None  # RequestMedia of the prompt's images and videos, until its prefill completes
    grammar: Any = None  # the GrammarMatcher its output follows (None: unconstrained)
    output_ids: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    slot: int | None = None  # linear-attention state slot, also the row of every per-slot table
    block_table: list[int] = field(default_factory=list)  # KV pages, in token order
    num_prefilled: int = 0  # prompt tokens scheduled into the cache so far
    rope_delta: int = 0  # rotary position - cache position of tokens after a prompt with media
    num_cached_tokens: int = 0  # prompt tokens reused from the prefix cache (not prefilled)
    restore_slot: int | None = None  # the checkpoint slot its state starts from (None: zero state)
    checkpoint_slot: int | None = None  # the checkpoint its prefill is taking, until the step publishes it
    cache_keys: list[int] = field(default_factory=list)  # prefix cache keys of its prompt's pages up to the checkpoint
    aborted: bool = False  # an abort arrived while the sequence was in the step in flight
    text: str = ""  # the output text so far (stop strings cut)
    finish_reason: str | None = None  # set with the last output: stop, length, abort, error
    stop_reason: int | str | None = None  # the stop token id or string that matched
    matcher: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.matcher = StopMatcher(self.params.stop)

    @property
    def max_tokens(self) -> int:
        """Tokens it may generate."""
        return self.params.max_tokens

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens; all but the last generated one are in the cache."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def last_token(self) -> int:
        """The token the next decode step feeds (at cache position num_tokens - 1)."""
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    def append_token(self, token_id: int, logprob: TokenLogprob | None) -> GenerationOutput:
        """Take one sampled token; the step's output for this sequence (finish_reason set when it ends)."""
        self.output_ids.append(token_id)
        text, finish, stop_reason = "", None, None
        if token_id in self.stop_ids:
            finish, stop_reason = "stop", token_id
        elif self.detokenizer is not None:
            text = self.matcher.feed(self.detokenizer.feed(token_id))
            if self.matcher.stopped:
                finish, stop_reason = "stop", self.matcher.matched
        if finish is None and len(self.output_ids) >= self.max_tokens:
            finish = "length"
        elif finish == "stop" and self.grammar is not None and self.grammar.closed_for_budget:
            finish, stop_reason = "length", None  # the grammar was closed early only because max_tokens was near
        if finish is not None and self.detokenizer is not None and not self.matcher.stopped:
            text += self.matcher.feed(self.detokenizer.flush())
            text += self.matcher.flush()
            if self.matcher.stopped:
                finish, stop_reason = "stop", self.matcher.matched
        self.text += text
        self.finish_reason, self.stop_reason = finish, stop_reason
        return GenerationOutput([token_id], text, len(self.prompt_ids), len(self.output_ids),
                                [logprob] if logprob is not None else None, finish, stop_reason,
                                num_cached_tokens=self.num_cached_tokens)

    def ended(self, reason: str, error: str | None = None) -> GenerationOutput:
        """The last output of a sequence stopped from outside (abort, error): no token."""
        self.finish_reason = reason
        return GenerationOutput([], "", len(self.prompt_ids), len(self.output_ids), finish_reason=reason, error=error,
                                num_cached_tokens=self.num_cached_tokens)
