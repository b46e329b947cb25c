"""What the engine hands back per sequence and token: the generated token, its text, why it ended."""
from __future__ import annotations

from dataclasses import dataclass, field


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
    num_cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of prefilled
