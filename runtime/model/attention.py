"""Gated full attention: Qwen3.5's softmax-attention token mixer (every 4th layer), over the KV pages."""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import TextConfig
from qwen35.runtime.kernels import KernelSet
from qwen35.runtime.kernels.attention import attention
from qwen35.runtime.model.batch import ForwardBatch, Mode
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.norms import RMSNorm
from qwen35.runtime.model.rotary import apply_rotary


class GatedAttention(nn.Module):
    """GQA attention with per-head q/k RMSNorm, partial RoPE and a sigmoid output gate.

    q_proj's output holds, per head, the query (first head_dim) then its gate (next head_dim):
    viewed as [..., heads, 2 * head_dim] and split down the middle, not split in two halves
    of the whole projection.
    """

    def __init__(self, text: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = text.num_attention_heads
        self.num_kv_heads = text.num_key_value_heads
        self.head_dim = text.head_dim
        hidden = text.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim * 2, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps=text.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=text.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], batch: ForwardBatch,
                cache: ModelCache, kernels: KernelSet) -> torch.Tensor:
        """Packed tokens x [N, H] -> [N, H]; the new K/V go to their pages before attention reads them."""
        tokens, heads, dim = x.shape[0], self.num_heads, self.head_dim
        query, gate = self.q_proj(x).view(tokens, heads, 2 * dim).chunk(2, dim=-1)
        key = self.k_proj(x).view(tokens, self.num_kv_heads, dim)
        value = self.v_proj(x).view(tokens, self.num_kv_heads, dim)
        cos, sin = rope
        query = apply_rotary(self.q_norm(query, kernels), cos, sin)
        key = apply_rotary(self.k_norm(key, kernels), cos, sin)
        key_pages, value_pages = cache.kv(self.layer_idx)
        key_pages.view(-1, self.num_kv_heads, dim).index_copy_(0, batch.kv_slots, key.to(key_pages.dtype))
        value_pages.view(-1, self.num_kv_heads, dim).index_copy_(0, batch.kv_slots, value.to(value_pages.dtype))
        if batch.mode is Mode.DECODE:
            out = kernels.decode_attention(query, key_pages, value_pages, batch.block_tables, batch.seq_lens)
        elif batch.dense_attention:
            # A lone first chunk (a long prompt in one shot) sees only itself: PyTorch's flash
            # attention on the new K/V beats walking pages, and it is what the 16K prefill runs.
            out = attention(query[None], key[None], value[None])[0]
        else:  # causal over each chunk's cached tokens and itself, all read from the pages
            out = kernels.prefill_attention(query, key_pages, value_pages, batch.block_tables, batch.cu_seqlens,
                                            batch.cached_lens)
        out = out.reshape(tokens, heads * dim) * torch.sigmoid(gate.reshape(tokens, heads * dim))
        return self.o_proj(out)
