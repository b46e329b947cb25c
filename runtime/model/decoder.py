"""The decoder layer, the one loop over a stack of them, and the text model (embeddings, layers, norm).

The residual add is fused into the next norm: a layer takes the previous layer's MLP output
and the residual stream, and add_rmsnorm returns both the normed input and the new residual
(in the activation dtype, as the unfused decoder keeps it). The first layer's input is the
embedding itself.
"""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import FULL_ATTENTION, TextConfig
from qwen35.runtime.kernels import KernelSet
from qwen35.runtime.model.attention import GatedAttention
from qwen35.runtime.model.batch import ForwardBatch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.linear_attention import GatedDeltaNet
from qwen35.runtime.model.mlp import MLP, SparseMoeBlock
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import RotaryEmbedding

Rope = tuple[torch.Tensor, torch.Tensor]


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

    def forward(self, out: torch.Tensor | None, residual: torch.Tensor, rope: Rope, batch: ForwardBatch,
                cache: ModelCache, kernels: KernelSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(the previous MLP output or None, residual [N, H]) -> this layer's (MLP output, residual)."""
        if out is None:
            normed = self.input_layernorm(residual, kernels)
        else:
            normed, residual = self.input_layernorm.add(out, residual, kernels)
        if self.is_full_attention:
            mixed = self.self_attn(normed, rope, batch, cache, kernels)
        else:
            mixed = self.linear_attn(normed, batch, cache, kernels)
        normed, residual = self.post_attention_layernorm.add(mixed, residual, kernels)
        return self.mlp(normed, kernels), residual


def run_layers(layers: nn.ModuleList, final_norm: RMSNorm, hidden: torch.Tensor, rope: Rope, batch: ForwardBatch,
               cache: ModelCache, kernels: KernelSet, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder loop: input hidden states [N, H] through the layers and the final norm.

    rows: keep only these packed positions (the norm is row-wise, so rows not wanted are never normed).
    """
    out, residual = None, hidden
    for layer in layers:
        out, residual = layer(out, residual, rope, batch, cache, kernels)
    if rows is not None:
        out, residual = out.index_select(0, rows), residual.index_select(0, rows)
    return final_norm.add(out, residual, kernels)[0]


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

    def forward(self, batch: ForwardBatch, cache: ModelCache, kernels: KernelSet,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [N, H] of the batch's tokens (or of the packed positions `rows`)."""
        hidden = self.embed_tokens(batch.token_ids)
        if batch.embeds is not None:
            hidden.index_copy_(0, batch.embed_index, batch.embeds.to(hidden.dtype))
        rope = self.rotary.packed(batch.positions, hidden.dtype)
        return run_layers(self.layers, self.norm, hidden, rope, batch, cache, kernels, rows)

    def commit(self, batch: ForwardBatch, accepted: torch.Tensor, cache: ModelCache, kernels: KernelSet) -> None:
        """After a VERIFY forward: every GDN layer keeps the state of each row's first accepted[b] tokens."""
        accepted = accepted.to(device=batch.state_slots.device, dtype=torch.long)
        for layer in self.layers:
            if not layer.is_full_attention:
                gdn = layer.linear_attn
                gdn.commit(batch.deferred[gdn.layer_idx], batch.state_slots, accepted, cache, kernels)
