"""One sequence's position in its grammar: which tokens may come next, and the tokens taken so far.

With thinking on, Qwen3.5's generation prompt opens a `<think>` block and the model closes it
with `</think>`; the reasoning in between is free text, so a matcher that starts in reasoning
follows no grammar (and masks nothing) until `</think>`, and the grammar holds from the next
token on. The answer's leading blank lines, which the model would write there, are not part
of any grammar: the reasoning parser drops them anyway.
"""
from __future__ import annotations

from collections.abc import Sequence

import llguidance

from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKEN_IDS

THINK_START_ID = ADDED_TOKEN_IDS["<think>"]
THINK_END_ID = ADDED_TOKEN_IDS["</think>"]
TURN_START_ID = ADDED_TOKEN_IDS["<|im_start|>"]


def opens_reasoning(prompt_ids: Sequence[int]) -> bool:
    """Whether the prompt ends inside a `<think>` block its last turn opened."""
    last_turn = len(prompt_ids) - 1 - prompt_ids[::-1].index(TURN_START_ID) if TURN_START_ID in prompt_ids else 0
    turn = prompt_ids[last_turn:]
    starts = [i for i, token in enumerate(turn) if token == THINK_START_ID]
    ends = [i for i, token in enumerate(turn) if token == THINK_END_ID]
    return bool(starts) and (not ends or starts[-1] > ends[-1])


class GrammarMatcher:
    """An llguidance matcher, plus whether generation is still in reasoning the grammar does not cover."""

    def __init__(self, matcher: llguidance.LLMatcher, in_reasoning: bool = False):
        self.matcher = matcher
        self.in_reasoning = in_reasoning

    @property
    def constrains(self) -> bool:
        """Whether the next token is masked by the grammar."""
        return not self.in_reasoning

    @property
    def is_terminated(self) -> bool:
        """Whether the grammar is complete: only an end-of-sequence token may follow."""
        return self.matcher.is_stopped()

    def mask_offset(self, drafts: Sequence[int]) -> int | None:
        """Of a speculative step's positions (the next token, then one after each draft), the first the grammar
        masks: 0 when it constrains now, j + 1 when drafts[j] closes the reasoning, None when none is masked."""
        if not self.in_reasoning:
            return 0
        return drafts.index(THINK_END_ID) + 1 if THINK_END_ID in drafts else None

    def fill_masks(self, address: int, mask_bytes: int, drafts: Sequence[int] = ()) -> None:
        """Write next-token masks of mask_bytes each from address: row 0 for the next token, row j + 1 for the token
        after drafts[:j + 1], as far as the grammar takes the drafts; rows it masks nothing in (reasoning) and rows
        past a refused draft are left as they are. The matcher ends where it began (drafts are rolled back)."""
        offset = self.mask_offset(drafts)
        if offset is None:
            return
        drafts = list(drafts[offset:])
        taken = self.matcher.validate_tokens(drafts) if drafts else 0
        self.matcher.unsafe_compute_mask_ptr(address + offset * mask_bytes, mask_bytes)
        for j, token in enumerate(drafts[:taken]):
            self.matcher.consume_token(token)
            self.matcher.unsafe_compute_mask_ptr(address + (offset + j + 1) * mask_bytes, mask_bytes)
        if taken:
            self.matcher.rollback(taken)
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar failed while masking: {self.matcher.get_error()}")

    def accept(self, token_id: int) -> None:
        """Take one generated token (the mask allowed it: anything else is a bug, so it raises)."""
        if self.in_reasoning:
            self.in_reasoning = token_id != THINK_END_ID
            return
        if not self.matcher.consume_token(token_id):
            raise RuntimeError(f"the grammar refused token {token_id} it had allowed: {self.matcher.get_error()}")
