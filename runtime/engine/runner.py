"""The model side of an engine step: write prompt chunks into cache rows, decode rows in one batch.

`ModelRunner` is what the engine loop needs from a model; `TorchModelRunner` implements it
on `Qwen35Model` and its per-row `ModelCache` (KV on attention layers, conv and recurrent
state on Gated DeltaNet layers). Tests drive the engine with scripted runners instead.
"""
from __future__ import annotations

from typing import Protocol

import torch

from qwen35.runtime.engine.multimodal import MediaInputs, PreparedMedia, prepare_media
from qwen35.runtime.model.qwen35_model import Qwen35Model


class ModelRunner(Protocol):
    """Step-level access to a model with `num_rows` cache rows of `max_len` tokens each."""

    num_rows: int
    max_len: int
    vocab_size: int
    device: torch.device

    def reset_row(self, row: int) -> None:
        """Empty a row for a new sequence."""

    def prefill(self, row: int, token_ids: list[int]) -> torch.Tensor:
        """Append prompt tokens to a row; the logits [V] after its last token."""

    # Runners that serve images and videos also have prepare_media(prompt_ids, media) -> PreparedMedia,
    # and prefill(row, token_ids, media=prepared.chunk(start, end)); the engine checks for it.

    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """Append one token to each row in one batch; logits [len(rows), V]."""

    # Speculative runners (speculative.SpeculativeRunner) also have num_speculative_tokens and
    # speculate(rows, token_ids, batch, history, slots, generator) -> SpeculativeStep, which
    # samples too; the engine uses it when EngineConfig.speculative_tokens matches.


def takes_media(runner) -> bool:
    """Whether a runner serves images and videos (has prepare_media and is not marked text_only)."""
    return callable(getattr(runner, "prepare_media", None)) and not getattr(runner, "text_only", False)


class TorchModelRunner:
    """`ModelRunner` over a loaded Qwen35Model: one ModelCache, rows reused across sequences."""

    def __init__(self, model: Qwen35Model, num_rows: int, max_len: int):
        self.model = model
        self.num_rows = num_rows
        self.max_len = max_len
        self.vocab_size = model.config.text.vocab_size
        self.device = model.output_weight.device
        self.cache = model.new_cache(num_rows, max_len)

    def reset_row(self, row: int) -> None:
        """Zero the row's linear-attention state and length (KV past the length is never read)."""
        self.cache.lengths[row] = 0
        for store in (self.cache.conv, self.cache.recurrent):
            for state in store.values():
                state[row].zero_()

    def prepare_media(self, prompt_ids: list[int], media: MediaInputs) -> PreparedMedia:
        """Vision embeddings and M-RoPE positions of a whole prompt, computed once per request."""
        return prepare_media(self.model, prompt_ids, media)

    def prefill(self, row: int, token_ids: list[int], media: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Run one prompt chunk into its row (media: the chunk's PreparedMedia slice); last logits [V]."""
        tokens = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        return self.model(tokens, self.cache, rows=[row], last_only=True, **(media or {}))[0, -1]

    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """Feed each row its last token; logits [B, V]."""
        tokens = torch.tensor(token_ids, dtype=torch.long, device=self.device)[:, None]
        return self.model(tokens, self.cache, rows=rows)[:, -1]
