"""Gated DeltaNet: Qwen3.5's linear-attention token mixer (3 of every 4 layers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import TextConfig
from qwen35.runtime.kernels.causal_conv1d import causal_conv1d, causal_conv1d_update
from qwen35.runtime.kernels.gated_delta_rule import chunk_gated_delta_rule, recurrent_gated_delta_rule
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.norms import GatedRMSNorm


class GatedDeltaNet(nn.Module):
    """in_proj_{qkv,z,b,a} -> causal conv + SiLU on qkv -> gated delta rule -> gated norm -> out_proj."""

    def __init__(self, text: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_k_heads = text.linear_num_key_heads
        self.num_v_heads = text.linear_num_value_heads
        self.head_k_dim = text.linear_key_head_dim
        self.head_v_dim = text.linear_value_head_dim
        self.key_dim = self.num_k_heads * self.head_k_dim
        self.value_dim = self.num_v_heads * self.head_v_dim
        conv_dim = 2 * self.key_dim + self.value_dim
        hidden = text.hidden_size
        self.in_proj_qkv = nn.Linear(hidden, conv_dim, bias=False)
        self.in_proj_z = nn.Linear(hidden, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(hidden, self.num_v_heads, bias=False)
        self.in_proj_a = nn.Linear(hidden, self.num_v_heads, bias=False)
        # Depthwise causal conv, stored as the checkpoint's Conv1d weight [conv_dim, 1, kernel].
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, text.linear_conv_kernel_dim, groups=conv_dim, bias=False)
        self.A_log = nn.Parameter(torch.zeros(self.num_v_heads))
        self.dt_bias = nn.Parameter(torch.ones(self.num_v_heads))
        self.norm = GatedRMSNorm(self.head_v_dim, eps=text.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, hidden, bias=False)

    def forward(self, hidden: torch.Tensor, cache: ModelCache | None = None,
                step: StepInfo | None = None) -> torch.Tensor:
        """hidden [B, T, H] -> [B, T, H], reading and updating the rows' state when cached."""
        batch, length, _ = hidden.shape
        mixed = self.in_proj_qkv(hidden)
        gate = self.in_proj_z(hidden).reshape(batch, length, self.num_v_heads, self.head_v_dim)
        beta = self.in_proj_b(hidden).sigmoid()
        # Log-decay in fp32 whatever the model dtype: exp(A_log) overflows bf16's precision budget.
        log_decay = -self.A_log.float().exp() * F.softplus(self.in_proj_a(hidden).float() + self.dt_bias.float())

        conv_weight = self.conv1d.weight.squeeze(1)
        conv_state = recurrent_state = None
        if cache is not None:
            conv_state = cache.read_state(cache.conv, self.layer_idx, step)
            recurrent_state = cache.read_state(cache.recurrent, self.layer_idx, step)
        if cache is not None and length == 1:
            mixed, conv_state = causal_conv1d_update(mixed[:, 0], conv_state, conv_weight)
            mixed = mixed[:, None]
        else:
            mixed, conv_state = causal_conv1d(mixed, conv_weight, conv_state)

        query, key, value = mixed.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        query = query.reshape(batch, length, self.num_k_heads, self.head_k_dim)
        key = key.reshape(batch, length, self.num_k_heads, self.head_k_dim)
        value = value.reshape(batch, length, self.num_v_heads, self.head_v_dim)
        rule = recurrent_gated_delta_rule if (cache is not None and length == 1) else chunk_gated_delta_rule
        core, recurrent_state = rule(query, key, value, log_decay, beta, initial_state=recurrent_state)

        if cache is not None:
            cache.write_state(cache.conv, self.layer_idx, step, conv_state)
            cache.write_state(cache.recurrent, self.layer_idx, step, recurrent_state)
        core = self.norm(core, gate).reshape(batch, length, self.value_dim)
        return self.out_proj(core)
