"""The multi-token-prediction head (`mtp.*`): one extra full-attention layer that drafts the
token after next from the main model's last hidden state and the next token's embedding."""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import FULL_ATTENTION, TextConfig
from qwen35.runtime.model.decoder import DecoderLayer
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import RotaryEmbedding


class MultiTokenPredictor(nn.Module):
    """fc(cat(norm(embed(next token)), norm(hidden))) -> decoder layer(s) -> norm.

    Shares embed_tokens and lm_head with the main model (passed in, not owned). Layer
    indices continue after the main stack so a cache can tell its KV apart.
    """

    def __init__(self, text: TextConfig):
        super().__init__()
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

    def forward(self, next_embeds: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Draft hidden states [B, T, H] (no cache; speculative decoding wires the cache later)."""
        fused = torch.cat([self.pre_fc_norm_embedding(next_embeds), self.pre_fc_norm_hidden(hidden)], dim=-1)
        hidden = self.fc(fused)
        rope = self.rotary(positions, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, rope)
        return self.norm(hidden)
