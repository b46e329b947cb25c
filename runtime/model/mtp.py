"""The multi-token-prediction head (`mtp.*`): one extra full-attention layer that drafts the
token after next from the main model's last hidden state and the next token's embedding.

Inputs, as Qwen3.5 was trained and as vLLM and SGLang serve it: at position i the head takes
the main model's final-normed hidden state h_i (the one lm_head reads) and the embedding of
token i+1; pre_fc_norm_embedding normalises the embedding, pre_fc_norm_hidden the hidden
state, and fc mixes cat(embedding, hidden). Its output (after its own norm) goes through the
shared lm_head to predict token i+2, and doubles as the "hidden state" of the next draft step.

The head's attention layer keeps its own KV cache (`DraftCache`), one row per sequence like
the main ModelCache, with entry i built from (h_i, token i+1) at rotary position i.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from qwen35.planner.models.config import FULL_ATTENTION, TextConfig
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.decoder import DecoderLayer
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import RotaryEmbedding


class DraftCache(ModelCache):
    """Per-row KV cache of the MTP layers only (indices num_hidden_layers + i); no linear state."""

    def __init__(self, text: TextConfig, num_rows: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(replace(text, layer_types=()), num_rows, max_len, device, dtype)
        kv_shape = (num_rows, max_len, text.num_key_value_heads, text.head_dim)
        for i in range(text.mtp_num_hidden_layers):
            layer = text.num_hidden_layers + i
            self.key[layer] = torch.zeros(kv_shape, dtype=dtype, device=self.device)
            self.value[layer] = torch.zeros(kv_shape, dtype=dtype, device=self.device)


class MultiTokenPredictor(nn.Module):
    """fc(cat(norm(embed(next token)), norm(hidden))) -> decoder layer(s) -> norm.

    Shares embed_tokens and lm_head with the main model (passed in, not owned). Layer
    indices continue after the main stack so a cache can tell its KV apart.
    """

    def __init__(self, text: TextConfig):
        super().__init__()
        self.config = text
        hidden = text.hidden_size
        self.pre_fc_norm_embedding = RMSNorm(hidden, eps=text.rms_norm_eps)
        self.pre_fc_norm_hidden = RMSNorm(hidden, eps=text.rms_norm_eps)
        self.fc = nn.Linear(2 * hidden, hidden, bias=False)
        first = text.num_hidden_layers
        self.layers = nn.ModuleList(
            DecoderLayer(text, first + i, FULL_ATTENTION) for i in range(text.mtp_num_hidden_layers)
        )
        self.norm = RMSNorm(hidden, eps=text.rms_norm_eps)
        self.rotary = RotaryEmbedding(text)

    def forward(self, next_embeds: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor | None = None,
                cache: DraftCache | None = None, step: StepInfo | None = None) -> torch.Tensor:
        """Draft hidden states [B, T, H] from next-token embeddings and main hidden states [B, T, H].

        With a cache the tokens extend the rows of `step` (from cache.begin; the caller commits
        or rolls back the lengths) and positions default to the step's.
        """
        if positions is None:
            positions = step.positions if step.rope_positions is None else step.rope_positions
        fused = torch.cat([self.pre_fc_norm_embedding(next_embeds), self.pre_fc_norm_hidden(hidden)], dim=-1)
        hidden = self.fc(fused)
        rope = self.rotary(positions, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, rope, cache, step)
        return self.norm(hidden)

    def new_cache(self, num_rows: int, max_len: int) -> DraftCache:
        """An empty draft KV cache on the head's device and dtype."""
        weight = self.fc.weight
        return DraftCache(self.config, num_rows, max_len, device=weight.device, dtype=weight.dtype)
