"""The sampling side of an engine step: per-slot token history, the generator, grammar masks and the batch's tensors.

`Sampler` belongs to the engine thread (through the runner). Slots are the sequences' state
slots, so a sequence's history row lives as long as it runs. In steady decoding the same
sequences are sampled step after step, each one token further: then the device tensors of the
SamplingBatch stay and only its step counters move (on the device). Rows whose sequence follows a
grammar (seq.grammar) have their logits masked in the same step, and their matchers take the
sampled tokens.
"""
from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from qwen35.runtime.engine.grammar.bitmask import TokenBitmask
from qwen35.runtime.engine.outputs import TokenLogprob
from qwen35.runtime.engine.sampling import SamplingBatch, TokenHistory, sample
from qwen35.runtime.engine.sequence import Sequence

IMPOSSIBLE_LOGPROB = -9999.0


class Sampler:
    """Token history per slot, the unseeded generator, grammar masks, and the sampling tensors kept across steady steps."""

    def __init__(self, num_slots: int, vocab_size: int, device: torch.device, seed: int):
        self.device = device
        self.history = TokenHistory(num_slots, vocab_size, device=device)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.bitmask = TokenBitmask(vocab_size, device)
        self._cached: tuple[tuple[int, ...], list[int], SamplingBatch, torch.Tensor] | None = None

    def start(self, seq: Sequence) -> None:
        """A sequence begins in its slot: its history row holds its prompt and no generated tokens."""
        self.history.start(seq.slot, seq.prompt_ids)

    def batch_for(self, seqs: Seq[Sequence]) -> tuple[SamplingBatch, torch.Tensor]:
        """The sequences' SamplingBatch and slots [B], rebuilt only when the batch changes."""
        key = tuple(seq.seq_id for seq in seqs)
        steps = [len(seq.output_ids) for seq in seqs]
        cached = self._cached
        if cached is not None and cached[0] == key and all(a == b + 1 for a, b in zip(steps, cached[1])):
            cached[2].advance()
            batch, slots = cached[2], cached[3]
        else:
            batch = SamplingBatch.from_params([seq.params for seq in seqs], steps, self.device)
            slots = torch.tensor([seq.slot for seq in seqs], dtype=torch.long, device=self.device)
        self._cached = (key, steps, batch, slots)
        return batch, slots

    def sample(self, logits: torch.Tensor, seqs: Seq[Sequence]) -> tuple[list[list[int]], list[list[TokenLogprob | None]]]:
        """One token per sequence from logits [B, V] (masked in place where a grammar constrains); counted in the
        history and taken by the grammars."""
        batch, slots = self.batch_for(seqs)
        if any(seq.grammar is not None and seq.grammar.constrains for seq in seqs):
            self.bitmask.apply(logits, [seq.grammar for seq in seqs])
        result = sample(logits, batch, self.history, slots, self.generator)
        self.history.append(slots, result.token_ids)
        token_ids = [[t] for t in result.token_ids.tolist()]
        self.advance_grammars(seqs, token_ids)
        return token_ids, token_logprobs(seqs, token_ids, result.logprobs, result.top_ids, result.top_logprobs)

    @staticmethod
    def advance_grammars(seqs: Seq[Sequence], token_ids: list[list[int]]) -> None:
        """Each grammar-following sequence's matcher takes the tokens the step emitted for it."""
        for seq, tokens in zip(seqs, token_ids):
            if seq.grammar is not None:
                for token in tokens:
                    seq.grammar.accept(token)


def token_logprobs(seqs: Seq[Sequence], token_ids: list[list[int]], chosen: torch.Tensor | None,
                   top_ids: torch.Tensor | None, top_values: torch.Tensor | None) -> list[list[TokenLogprob | None]]:
    """Per sequence and emitted token, its TokenLogprob when the sequence asked for logprobs.

    chosen [B] or [B, T], top_ids / top_values [B, N] or [B, T, N] (T tokens per row); None: no row asked.
    Tokens a grammar refused have logprob -inf, reported as OpenAI's -9999.0 (JSON has no infinity).
    """
    if chosen is None:
        return [[None] * len(tokens) for tokens in token_ids]
    chosen = chosen.reshape(len(seqs), -1)
    shape = (*chosen.shape, top_ids.shape[-1])
    top_values = top_values.nan_to_num(neginf=IMPOSSIBLE_LOGPROB)
    chosen, ids, values = chosen.tolist(), top_ids.reshape(shape).tolist(), top_values.reshape(shape).tolist()
    out = []
    for i, (seq, tokens) in enumerate(zip(seqs, token_ids)):
        wanted = seq.params.logprobs
        out.append([None if wanted is None else
                    TokenLogprob(token, chosen[i][j], list(zip(ids[i][j][:wanted], values[i][j][:wanted])))
                    for j, token in enumerate(tokens)])
    return out
