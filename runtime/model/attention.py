"""Gated full attention: Qwen3.5's softmax-attention token mixer (every 4th layer)."""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import TextConfig
from qwen35.runtime.kernels.attention import attention
from qwen35.runtime.model.cache import ModelCache, StepInfo
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

    def forward(self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                cache: ModelCache | None = None, step: StepInfo | None = None) -> torch.Tensor:
        """hidden [B, T, H] -> [B, T, H]; with a cache, appends k/v and attends over the row."""
        batch, length, _ = hidden.shape
        query, gate = self.q_proj(hidden).view(batch, length, self.num_heads, 2 * self.head_dim).chunk(2, dim=-1)
        gate = gate.reshape(batch, length, self.num_heads * self.head_dim)
        key = self.k_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim)
        value = self.v_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim)
        cos, sin = rope
        query = apply_rotary(self.q_norm(query), cos, sin)
        key = apply_rotary(self.k_norm(key), cos, sin)
        seq_lens = None
        if cache is not None:
            key, value = cache.append_kv(self.layer_idx, step, key, value)
            seq_lens = step.seq_lens
        out = attention(query, key, value, seq_lens=seq_lens)
        out = out.reshape(batch, length, self.num_heads * self.head_dim) * torch.sigmoid(gate)
        return self.o_proj(out)
