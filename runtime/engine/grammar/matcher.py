"""One sequence's position in its grammar: which tokens may come next, and the tokens taken so far.

With thinking on, Qwen3.5's generation prompt opens a `<think>` block and the model closes it
with `</think>`; the reasoning in between is free text, so a matcher that starts in reasoning
follows no grammar (and masks nothing) until `</think>`, and the grammar holds from the next
token on. The answer's leading blank lines, which the model would write there, are not part
of any grammar: the reasoning parser drops them anyway.

A matcher that knows its sequence's token budget (max_tokens) closes the grammar before the
budget runs out, so an answer cut by max_tokens is still complete under its grammar (a JSON
object that parses): in the last CLOSING_HORIZON tokens it works out, on a copy, a short way to
an accepting state (the grammar's forced tokens, else the first closing character it allows:
quote, brackets, a digit, the letters of true/false/null), and once that way is about as long
as the budget left, the mask allows only its tokens and then an end-of-sequence token. The
sequence then ends with finish_reason "length", as it would have without a grammar.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import llguidance

from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKEN_IDS

THINK_START_ID = ADDED_TOKEN_IDS["<think>"]
THINK_END_ID = ADDED_TOKEN_IDS["</think>"]
TURN_START_ID = ADDED_TOKEN_IDS["<|im_start|>"]
# How far before the end of its budget a matcher starts looking for the way to close its grammar,
# and the most tokens that way may take.
CLOSING_HORIZON = 96
# Tokens of budget kept beyond the closing's own length: one generated token can lengthen the way
# to close by several (a token like '[{"' opens three things at once).
CLOSING_SLACK = 4
# The most one token is taken to lengthen the way to close between two workings-out of it, and how
# many tokens later a grammar no closing was found for is tried again.
CLOSING_GROWTH = 4
CLOSING_RETRY = 8
# The characters a closing tries, first allowed first: end a string, close containers, finish a
# key's separator or a number, complete or start a literal, then what the grammar requires before
# it can end (a separator, the opening of the top-level value).
CLOSING_CHARACTERS = '"}]0: ruelsatfn1,{['


def opens_reasoning(prompt_ids: Sequence[int]) -> bool:
    """Whether the prompt ends inside a `<think>` block its last turn opened."""
    last_turn = len(prompt_ids) - 1 - prompt_ids[::-1].index(TURN_START_ID) if TURN_START_ID in prompt_ids else 0
    turn = prompt_ids[last_turn:]
    starts = [i for i, token in enumerate(turn) if token == THINK_START_ID]
    ends = [i for i, token in enumerate(turn) if token == THINK_END_ID]
    return bool(starts) and (not ends or starts[-1] > ends[-1])


@dataclass(frozen=True)
class ClosingTokens:
    """One tokenizer's single-token closing characters (in CLOSING_CHARACTERS' order) and end-of-sequence ids."""

    ids: tuple[int, ...]
    brackets_first: tuple[int, ...]  # the same with the closing brackets ahead of the quote
    eos_ids: tuple[int, ...]

    @classmethod
    def for_tokenizer(cls, tokenizer: llguidance.LLTokenizer) -> ClosingTokens:
        """The closing characters the tokenizer spells as one token each."""
        def single(characters: str) -> tuple[int, ...]:
            tokens = [tokenizer.tokenize_str(character) for character in characters]
            return tuple(token[0] for token in tokens if len(token) == 1)

        brackets = single("}]")
        ids = single(CLOSING_CHARACTERS)
        return cls(ids, brackets + tuple(t for t in ids if t not in brackets), tuple(tokenizer.eos_tokens))


def closing_path(matcher: llguidance.LLMatcher, closers: ClosingTokens, limit: int) -> list[int] | None:
    """A short run of tokens that takes the matcher to an accepting state, at most `limit` (None: none found);
    the matcher itself is not moved. Two greedy walks: closing characters in their order (a quote first, which
    ends strings), and with brackets ahead of the quote (which closes containers sooner outside strings); the
    shorter wins."""
    quote_first = _greedy_closing(matcher, closers.ids, limit)
    if quote_first is not None:
        limit = len(quote_first) - 1
    brackets_first = _greedy_closing(matcher, closers.brackets_first, limit)
    return brackets_first if brackets_first is not None else quote_first


def _greedy_closing(matcher: llguidance.LLMatcher, order: Sequence[int], limit: int) -> list[int] | None:
    """Forced tokens where the grammar forces them, else the first token of `order` it allows, until it accepts."""
    probe, path = matcher.deep_copy(), []
    while not probe.is_accepting():
        forced = probe.compute_ff_tokens()
        step = forced or next(([token] for token in order if probe.validate_tokens([token]) == 1), None)
        if step is None or len(path) + len(step) > limit:
            return None
        probe.consume_tokens(step)
        path += step
    return path


class GrammarMatcher:
    """An llguidance matcher, whether generation is still in reasoning the grammar does not cover, and the
    token budget left (None: no closing before it runs out)."""

    def __init__(self, matcher: llguidance.LLMatcher, in_reasoning: bool = False, budget: int | None = None,
                 closers: ClosingTokens | None = None):
        self.matcher = matcher
        self.in_reasoning = in_reasoning
        self.budget = budget if closers is not None else None
        self.closers = closers
        self.closing: list[int] | None = None  # once closing: the tokens still to emit before end-of-sequence
        self._next_check = CLOSING_HORIZON  # the budget at which the way to close is next worked out

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

    @property
    def closed_for_budget(self) -> bool:
        """Whether the grammar was closed early because the token budget was running out."""
        return self.closing is not None

    def _must_close(self) -> bool:
        """Whether the tokens left only just hold the way to close the grammar (from then on it is followed).

        The way is worked out again only when the budget could have come down to it: each token taken since may
        have lengthened it by CLOSING_GROWTH at most; where none was found, CLOSING_RETRY tokens later."""
        if self.closing is not None:
            return True
        budget = self.budget
        if budget is None or budget > min(CLOSING_HORIZON, self._next_check) or self.matcher.is_stopped():
            return False
        path = closing_path(self.matcher, self.closers, CLOSING_HORIZON)
        if path is None:
            self._next_check = budget - CLOSING_RETRY
            return False
        if len(path) + CLOSING_SLACK < budget:
            self._next_check = (len(path) + CLOSING_GROWTH * budget + CLOSING_SLACK) // (1 + CLOSING_GROWTH)
            return False
        self.closing = path
        return True

    def _fill_closing(self, address: int, mask_bytes: int, drafts: Sequence[int], last_only: bool = False) -> None:
        """Rows that allow only the closing's next tokens (then end-of-sequence), as far as the drafts follow it;
        last_only: just the row after all the drafts, at address."""
        expected = self.closing + [None] * (len(drafts) + 1)
        for j in range(len(drafts) + 1):
            if j and drafts[j - 1] != expected[j - 1]:
                return
            if last_only and j < len(drafts):
                continue
            row = address + (0 if last_only else j * mask_bytes)
            ctypes.memset(row, 0, mask_bytes)
            for token in ([expected[j]] if expected[j] is not None else self.closers.eos_ids):
                word = ctypes.c_uint32.from_address(row + 4 * (token // 32))
                word.value |= 1 << (token % 32)

    def fill_masks(self, address: int, mask_bytes: int, drafts: Sequence[int] = (), last_only: bool = False) -> None:
        """Write next-token masks of mask_bytes each from address: row 0 for the next token, row j + 1 for the token
        after drafts[:j + 1], as far as the grammar takes the drafts; rows it masks nothing in (reasoning) and rows
        past a refused draft are left as they are. last_only: just the mask after all the drafts, at address (what
        a drafter proposes next), written only when the grammar takes every draft. The matcher ends where it began
        (drafts are rolled back)."""
        offset = self.mask_offset(drafts)
        if offset is None:
            return
        if offset == 0 and self._must_close():
            self._fill_closing(address, mask_bytes, drafts, last_only)
            return
        drafts = list(drafts[offset:])
        taken = self.matcher.validate_tokens(drafts) if drafts else 0
        if last_only and taken < len(drafts):
            return
        if not last_only:
            self.matcher.unsafe_compute_mask_ptr(address + offset * mask_bytes, mask_bytes)
        recorded = 0
        for j, token in enumerate(drafts[:taken]):
            recorded += self._consume_draft(token)
            if not last_only:
                self.matcher.unsafe_compute_mask_ptr(address + (offset + j + 1) * mask_bytes, mask_bytes)
        if last_only:
            self.matcher.unsafe_compute_mask_ptr(address, mask_bytes)
        if recorded:
            self.matcher.rollback(recorded)
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar failed while masking: {self.matcher.get_error()}")

    def _consume_draft(self, token: int) -> bool:
        """Take a validated draft token; whether the matcher recorded it for rollback. A token taken once the
        matcher has stopped (end-of-sequence after a complete grammar) is not recorded: rolling it back too
        would undo a token before it."""
        recorded = not self.matcher.is_stopped()
        self.matcher.consume_token(token)
        return recorded

    def accept(self, token_id: int) -> None:
        """Take one generated token (the mask allowed it: anything else is a bug, so it raises)."""
        if self.budget is not None:
            self.budget -= 1
        if self.closing:
            if token_id != self.closing[0]:
                raise RuntimeError(f"token {token_id} is not the grammar's closing token {self.closing[0]}")
            self.closing.pop(0)
        if self.in_reasoning:
            self.in_reasoning = token_id != THINK_END_ID
            return
        if not self.matcher.consume_token(token_id):
            raise RuntimeError(f"the grammar refused token {token_id} it had allowed: {self.matcher.get_error()}")
