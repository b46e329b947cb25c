"""Qwen3.5's text layers run over a paged KV pool and a state-slot pool.

The model's own modules and weights do the projections, the MLP, the rotary tables and the
logits; the kernel set (paged_kernels) does the token mixing against the pools and the norms.
Tokens are packed: a prefill batch is every sequence's new tokens back to back, split by
cu_seqlens; a decode batch is one token per sequence. The residual add is fused into the next
norm (add_rmsnorm returns the sum it normalised, in the activation dtype, as the decoder keeps it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen35.runtime.engine.kv_pool import KVPool
from qwen35.runtime.engine.paged_kernels import Kernels
from qwen35.runtime.engine.state_pool import StatePool
from qwen35.runtime.kernels.attention import attention
from qwen35.runtime.model.attention import GatedAttention
from qwen35.runtime.model.linear_attention import GatedDeltaNet
from qwen35.runtime.model.qwen35_model import Qwen35Model
from qwen35.runtime.model.rotary import apply_rotary


@dataclass
class PrefillBatch:
    """Prompt chunks of several sequences, packed; `bounds` keeps the host copy of the offsets."""

    token_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64 rotary positions, or [3, T] (M-RoPE) when a sequence brings media
    cu_seqlens: torch.Tensor  # [n + 1] int32, offsets of each sequence's tokens in the pack
    state_slots: torch.Tensor  # [n] int32
    kv_slots: torch.Tensor  # [T] int64, flat KV-cache slot of every new token
    block_tables: torch.Tensor  # [n, max_pages] int32
    last_index: torch.Tensor  # [n] int64, each sequence's last token in the pack
    cached_lens: torch.Tensor  # [n] int32, tokens each sequence had cached before this chunk
    bounds: list[tuple[int, int, int]]  # per sequence: (pack start, pack end, tokens cached before)
    embed_index: torch.Tensor | None = None  # [M] int64, pack offsets of the image and video pad tokens
    embeds: torch.Tensor | None = None  # [M, H], the vision embeddings that replace theirs


@dataclass
class DecodeBatch:
    """One new token per sequence; every tensor has the batch's (possibly padded) size."""

    token_ids: torch.Tensor  # [B] int64
    positions: torch.Tensor  # [B] int64 rotary positions: cache position + the sequence's rope delta
    state_slots: torch.Tensor  # [B] int32, -1 for padding
    kv_slots: torch.Tensor  # [B] int64, the scratch page for padding
    block_tables: torch.Tensor  # [B, max_pages] int32
    seq_lens: torch.Tensor  # [B] int32, tokens cached once the new one is written


class PagedTextModel:
    """Forward passes of a loaded Qwen35Model's text stack against a KVPool and a StatePool."""

    def __init__(self, model: Qwen35Model, kv: KVPool, state: StatePool, kernels: Kernels):
        self.model = model
        self.text = model.language_model
        self.kv = kv
        self.state = state
        self.kernels = kernels

    def prefill(self, batch: PrefillBatch) -> torch.Tensor:
        """Logits [n, V] after each sequence's last packed token; writes KV and state."""
        embeds = self.text.embed_tokens(batch.token_ids)
        if batch.embed_index is not None:
            embeds.index_copy_(0, batch.embed_index, batch.embeds.to(embeds.dtype))
        hidden = self._layers(embeds, batch.positions, batch, decode=False)
        return self._logits(*hidden, rows=batch.last_index)

    def decode(self, batch: DecodeBatch) -> torch.Tensor:
        """Logits [B, V] for one token per sequence; writes KV and state (CUDA-graph safe)."""
        hidden = self._layers(self.text.embed_tokens(batch.token_ids), batch.positions, batch, decode=True)
        return self._logits(*hidden, rows=None)

    def _layers(self, residual, positions, batch, decode: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(last MLP output, residual stream before it), both [N, H], from the input embeddings [N, H]."""
        text = self.text
        rope = text.rotary(positions.unsqueeze(-2), residual.dtype)  # [N] -> [1, N]; M-RoPE [3, N] -> [3, 1, N]
        first = text.layers[0].input_layernorm
        normed = self.kernels.rmsnorm(residual, first.weight, first.eps)
        out = None
        for index, layer in enumerate(text.layers):
            if index:
                norm = layer.input_layernorm
                normed, residual = self.kernels.add_rmsnorm(out, residual, norm.weight, norm.eps)
            if layer.is_full_attention:
                mixed = self._attention(layer.self_attn, normed, rope, batch, decode)
            else:
                mixed = self._linear_attention(layer.linear_attn, normed, batch, decode)
            norm = layer.post_attention_layernorm
            normed, residual = self.kernels.add_rmsnorm(mixed, residual, norm.weight, norm.eps)
            out = layer.mlp(normed)
        return out, residual

    def _logits(self, out: torch.Tensor, residual: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is not None:  # the final norm is row-wise: only the rows whose logits are wanted
            out, residual = out.index_select(0, rows), residual.index_select(0, rows)
        norm = self.text.norm
        normed, _ = self.kernels.add_rmsnorm(out, residual, norm.weight, norm.eps)
        return self.model.compute_logits(normed)

    def _linear_attention(self, gdn: GatedDeltaNet, x: torch.Tensor, batch, decode: bool) -> torch.Tensor:
        """Gated DeltaNet over packed tokens x [N, H], conv and recurrent state in the slot pool."""
        tokens = x.shape[0]
        layer, kernels = gdn.layer_idx, self.kernels
        mixed = gdn.in_proj_qkv(x)
        gate = gdn.in_proj_z(x).view(tokens, gdn.num_v_heads, gdn.head_v_dim)
        b, a = gdn.in_proj_b(x), gdn.in_proj_a(x)
        conv_weight = gdn.conv1d.weight.squeeze(1)
        conv_pool, state_pool = self.state.conv[layer], self.state.recurrent[layer]
        if decode:
            mixed = kernels.conv_decode(mixed, conv_weight, conv_pool, batch.state_slots)
        else:
            mixed = kernels.conv_prefill(mixed, conv_weight, batch.cu_seqlens, conv_pool, batch.state_slots)
        query, key, value = mixed.split([gdn.key_dim, gdn.key_dim, gdn.value_dim], dim=-1)
        query = query.view(tokens, gdn.num_k_heads, gdn.head_k_dim)
        key = key.view(tokens, gdn.num_k_heads, gdn.head_k_dim)
        value = value.view(tokens, gdn.num_v_heads, gdn.head_v_dim)
        if decode:
            core = kernels.gdr_decode(query, key, value, a, b, gdn.A_log, gdn.dt_bias, state_pool, batch.state_slots)
        else:
            core = kernels.gdr_prefill(query, key, value, a, b, gdn.A_log, gdn.dt_bias, batch.cu_seqlens,
                                       state_pool, batch.state_slots)
        core = kernels.gated_rmsnorm(core, gate, gdn.norm.weight, gdn.norm.eps)
        return gdn.out_proj(core.reshape(tokens, gdn.value_dim))

    def _attention(self, attn: GatedAttention, x: torch.Tensor, rope, batch, decode: bool) -> torch.Tensor:
        """Gated attention over packed tokens x [N, H]; new K/V go to their pages first."""
        tokens, heads, dim = x.shape[0], attn.num_heads, attn.head_dim
        query, gate = attn.q_proj(x).view(tokens, heads, 2 * dim).chunk(2, dim=-1)
        key = attn.k_proj(x).view(tokens, attn.num_kv_heads, dim)
        value = attn.v_proj(x).view(tokens, attn.num_kv_heads, dim)
        cos, sin = rope
        query = apply_rotary(self.kernels.rmsnorm(query, attn.q_norm.weight, attn.q_norm.eps)[None], cos, sin)[0]
        key = apply_rotary(self.kernels.rmsnorm(key, attn.k_norm.weight, attn.k_norm.eps)[None], cos, sin)[0]
        key_slots, value_slots = self.kv.flat(attn.layer_idx)
        key_slots.index_copy_(0, batch.kv_slots, key.to(key_slots.dtype))
        value_slots.index_copy_(0, batch.kv_slots, value.to(value_slots.dtype))
        key_pages, value_pages = self.kv.key[attn.layer_idx], self.kv.value[attn.layer_idx]
        if decode:
            out = self.kernels.decode_attention(query, key_pages, value_pages, batch.block_tables, batch.seq_lens)
        elif len(batch.bounds) == 1 and batch.bounds[0][2] == 0:
            # A lone first chunk (a long prompt in one shot) sees only itself: PyTorch's flash
            # attention on the new K/V beats walking pages, and it is what the 16K prefill runs.
            out = attention(query[None], key[None], value[None])[0]
        else:  # causal over each chunk's cached tokens and itself, all read from the pages
            out = self.kernels.prefill_attention(query, key_pages, value_pages, batch.block_tables, batch.cu_seqlens,
                                                 batch.cached_lens)
        out = out.reshape(tokens, heads * dim) * torch.sigmoid(gate.reshape(tokens, heads * dim))
        return attn.o_proj(out)
