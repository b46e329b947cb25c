"""Gated DeltaNet: Qwen3.5's linear-attention token mixer (3 of every 4 layers), over the state slots.

One forward picks its ops by the batch's mode: the packed chunked rule for PREFILL, the one-token
recurrence for DECODE, and for VERIFY (speculation) the recurrence over each row's T tokens that
reads the row's state without writing it. A verify leaves the layer's inputs in batch.deferred;
`commit` then advances each row's state by its accepted prefix only. Recompute rather than
per-token snapshots: the commit reads and writes each row's state once and no weights, where
snapshots would keep k + 1 fp32 states per layer and row (0.8B, k = 3: 4 MiB) until the decision.
"""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import TextConfig
from qwen35.runtime.kernels import KernelSet
from qwen35.runtime.model.batch import DeferredState, ForwardBatch, Mode
from qwen35.runtime.model.cache import ModelCache
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

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cache: ModelCache, kernels: KernelSet) -> torch.Tensor:
        """Packed tokens x [N, H] -> [N, H], reading (and, but for a verify, updating) each sequence's slot."""
        tokens = x.shape[0]
        mixed = self.in_proj_qkv(x)
        gate = self.in_proj_z(x).view(tokens, self.num_v_heads, self.head_v_dim)
        a, b = self.in_proj_a(x), self.in_proj_b(x)
        weight = self.conv1d.weight.squeeze(1)
        conv_pool, state_pool = cache.state(self.layer_idx)
        slots = batch.state_slots
        if batch.mode is Mode.PREFILL:
            mixed = kernels.conv_prefill(mixed, weight, batch.cu_seqlens, conv_pool, slots)
        elif batch.mode is Mode.DECODE:
            mixed = kernels.conv_decode(mixed, weight, conv_pool, slots)
        else:
            mixed, window = kernels.conv_verify(mixed.view(batch.num_sequences, -1, mixed.shape[-1]), weight,
                                                conv_pool, slots)
            mixed = mixed.view(tokens, -1)
        query, key, value = mixed.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        query = query.view(tokens, self.num_k_heads, self.head_k_dim)
        key = key.view(tokens, self.num_k_heads, self.head_k_dim)
        value = value.view(tokens, self.num_v_heads, self.head_v_dim)
        if batch.mode is Mode.PREFILL:
            core = kernels.gdr_prefill(query, key, value, a, b, self.A_log, self.dt_bias, batch.cu_seqlens,
                                       state_pool, slots)
        elif batch.mode is Mode.DECODE:
            core = kernels.gdr_decode(query, key, value, a, b, self.A_log, self.dt_bias, state_pool, slots)
        else:
            rows = (batch.num_sequences, -1)
            deferred = DeferredState(window, query.unflatten(0, rows), key.unflatten(0, rows),
                                     value.unflatten(0, rows), a.unflatten(0, rows), b.unflatten(0, rows))
            core = kernels.gdr_verify(deferred.query, deferred.key, deferred.value, deferred.a, deferred.b,
                                      self.A_log, self.dt_bias, state_pool, slots).view(value.shape)
            batch.deferred[self.layer_idx] = deferred
        core = self.norm(core, gate, kernels)
        return self.out_proj(core.reshape(tokens, self.value_dim))

    def commit(self, deferred: DeferredState, slots: torch.Tensor, accepted: torch.Tensor, cache: ModelCache,
               kernels: KernelSet) -> None:
        """After a verify: each row's slot takes the state of its first accepted[b] (1..T) verified tokens."""
        conv_pool, state_pool = cache.state(self.layer_idx)
        width = conv_pool.shape[-1]  # kernel - 1
        # After a tokens the conv state is window[..., a : a + K-1]: the last K-1 inputs seen.
        index = (accepted[:, None] + torch.arange(width, device=accepted.device))[:, None, :]
        window = deferred.window
        conv_pool.index_copy_(0, slots.long(), window.gather(2, index.expand(-1, window.shape[1], -1)))
        kernels.gdr_commit(deferred.query, deferred.key, deferred.value, deferred.a, deferred.b, self.A_log,
                           self.dt_bias, state_pool, slots, accepted)
