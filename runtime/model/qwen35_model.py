"""The whole Qwen3.5 checkpoint as one module: text model, lm_head, MTP head and vision tower."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import CheckpointConfig
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.decoder import TextModel
from qwen35.runtime.model.mtp import MultiTokenPredictor
from qwen35.runtime.model.vision import VisionTower


class Qwen35Model(nn.Module):
    """Dense or MoE Qwen3.5; `model(input_ids)` gives logits [B, T, vocab].

    Submodules map onto checkpoint prefixes: language_model <- model.language_model.,
    visual <- model.visual., mtp <- mtp., lm_head <- lm_head. (absent when tied: the
    embedding matrix doubles as the output projection).
    """

    def __init__(self, config: CheckpointConfig):
        super().__init__()
        self.config = config
        text = config.text
        self.tie_word_embeddings = config.tie_word_embeddings
        self.language_model = TextModel(text)
        self.lm_head = None if self.tie_word_embeddings else nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.mtp = MultiTokenPredictor(text) if text.mtp_num_hidden_layers > 0 else None
        self.visual = VisionTower(config.vision) if config.vision is not None else None

    @property
    def output_weight(self) -> torch.Tensor:
        """The [vocab, hidden] matrix that turns hidden states into logits."""
        return self.language_model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., vocab]."""
        return F.linear(hidden, self.output_weight)

    def forward(self, input_ids: torch.Tensor, cache: ModelCache | None = None,
                rows: list[int] | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits for input_ids [B, T].

        Without a cache: a full causal forward from position 0. With one: the tokens extend
        cache rows `rows` (default: all rows, in order), each at its own position, and the
        rows' state is updated. last_only keeps just the last position's logits ([B, 1, V]).
        """
        step = None
        if cache is not None:
            expected = cache.num_rows if rows is None else len(rows)
            if input_ids.shape[0] != expected:
                raise ValueError(f"input_ids has {input_ids.shape[0]} rows but the call names {expected} cache rows")
            step = cache.begin(rows, input_ids.shape[1])
        hidden = self.language_model(input_ids, cache, step)
        if cache is not None:
            cache.commit(step)
        if last_only:
            hidden = hidden[:, -1:]
        return self.compute_logits(hidden)

    def new_cache(self, num_rows: int, max_len: int) -> ModelCache:
        """Empty per-row generation state on the model's device and dtype."""
        weight = self.language_model.embed_tokens.weight
        return ModelCache(self.config.text, num_rows, max_len, device=weight.device, dtype=weight.dtype)
