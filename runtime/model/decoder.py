"""The decoder layer and the text model: embeddings, the hybrid layer stack, the final norm."""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import FULL_ATTENTION, TextConfig
from qwen35.runtime.model.attention import GatedAttention
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.linear_attention import GatedDeltaNet
from qwen35.runtime.model.mlp import MLP, SparseMoeBlock
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import RotaryEmbedding


def feed_forward(text: TextConfig) -> nn.Module:
    """The layer's MLP: sparse MoE for MoE models, SwiGLU otherwise."""
    return SparseMoeBlock(text) if text.is_moe else MLP(text.hidden_size, text.intermediate_size)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: token mixer (GDN or gated attention), then the MLP."""

    def __init__(self, text: TextConfig, layer_idx: int, layer_type: str):
        super().__init__()
        self.is_full_attention = layer_type == FULL_ATTENTION
        if self.is_full_attention:
            self.self_attn = GatedAttention(text, layer_idx)
        else:
            self.linear_attn = GatedDeltaNet(text, layer_idx)
        self.mlp = feed_forward(text)
        self.input_layernorm = RMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(text.hidden_size, eps=text.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                cache: ModelCache | None = None, step: StepInfo | None = None) -> torch.Tensor:
        """hidden [B, T, H] -> [B, T, H]."""
        normed = self.input_layernorm(hidden)
        if self.is_full_attention:
            hidden = hidden + self.self_attn(normed, rope, cache, step)
        else:
            hidden = hidden + self.linear_attn(normed, cache, step)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class TextModel(nn.Module):
    """embed_tokens -> layers -> norm (the checkpoint's `model.language_model.*`)."""

    def __init__(self, text: TextConfig):
        super().__init__()
        self.config = text
        self.embed_tokens = nn.Embedding(text.vocab_size, text.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(text, i, layer_type) for i, layer_type in enumerate(text.layer_types)
        )
        self.norm = RMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        self.rotary = RotaryEmbedding(text)

    def forward(self, input_ids: torch.Tensor, cache: ModelCache | None = None,
                step: StepInfo | None = None, positions: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [B, T, H] for input_ids [B, T] (or their given embeddings).

        Positions default to the cache rows' next positions (or 0..T-1 without a cache);
        pass [3, B, T] positions for multimodal prompts.
        """
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if positions is None:
            if step is not None:
                positions = step.positions
            else:
                positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
        rope = self.rotary(positions, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, rope, cache, step)
        return self.norm(hidden)
