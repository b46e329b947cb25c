"""The multi-token-prediction head (`mtp.*`): one extra full-attention layer that drafts the
token after next from the main model's last hidden state and the next token's embedding.

Inputs, as Qwen3.5 was trained and as vLLM and SGLang serve it: at position i the head takes
the main model's final-normed hidden state h_i (the one lm_head reads) and the embedding of
token i+1; pre_fc_norm_embedding normalises the embedding, pre_fc_norm_hidden the hidden
state, and fc mixes cat(embedding, hidden). Its output (after its own norm) goes through the
shared lm_head to predict token i+2, and doubles as the "hidden state" of the next draft step.

The head's attention layer keeps its KV in the model's page pool (layer ids num_hidden_layers + i,
the same pages as the main model's KV at the same positions): entry i, built from (h_i, token
i+1), sits at position i, so the head's cache trails the main one and shares its block tables.
"""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import FULL_ATTENTION, TextConfig
from qwen35.runtime.kernels import KernelSet
from qwen35.runtime.model.batch import ForwardBatch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.decoder import DecoderLayer, run_layers
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import RotaryEmbedding


class MultiTokenPredictor(nn.Module):
    """fc(cat(norm(embed(next token)), norm(hidden))) -> decoder layer(s) -> norm.

    Shares embed_tokens and lm_head with the main model (the caller embeds). Layer indices
    continue after the main stack, so the cache tells its KV apart.
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

    def forward(self, next_embeds: torch.Tensor, hidden: torch.Tensor, batch: ForwardBatch, cache: ModelCache,
                kernels: KernelSet, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Draft hidden states [N, H] from next-token embeddings and main hidden states [N, H] at the batch's positions."""
        fused = torch.cat([self.pre_fc_norm_embedding(next_embeds, kernels),
                           self.pre_fc_norm_hidden(hidden.to(next_embeds.dtype), kernels)], dim=-1)
        x = self.fc(fused)
        rope = self.rotary.packed(batch.positions, x.dtype)
        return run_layers(self.layers, self.norm, x, rope, batch, cache, kernels, rows)
