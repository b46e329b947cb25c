"""The kernel set the paged runner calls, chosen once: Triton on CUDA, torch references on CPU.

Both sets share one signature per op, the Triton kernels' (packed tokens, state read and
written in place through slot ids, KV read through block tables). The torch set adapts the
plain references to it: per sequence for prefill, gather/scatter of the slots for decode.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qwen35.runtime.kernels.causal_conv1d import reference as conv_ref
from qwen35.runtime.kernels.gated_delta_rule import reference as gdr_ref
from qwen35.runtime.kernels.gated_rmsnorm import reference as gated_norm_ref
from qwen35.runtime.kernels.paged_attention import reference as paged_ref
from qwen35.runtime.kernels.paged_prefill_attention import reference as paged_prefill_ref
from qwen35.runtime.kernels.rmsnorm import reference as norm_ref


@dataclass(frozen=True)
class Kernels:
    """One implementation of every op the paged forward needs."""

    name: str
    conv_prefill: Callable  # (x [T, D], weight [D, K], cu_seqlens, conv_pool, slots) -> [T, D]
    conv_decode: Callable  # (x [B, D], weight, conv_pool, slots) -> [B, D]
    gdr_prefill: Callable  # (q, k, v, a, b, A_log, dt_bias, cu_seqlens, state_pool, slots) -> [T, Hv, Dv]
    gdr_decode: Callable  # (q, k, v, a, b, A_log, dt_bias, state_pool, slots) -> [B, Hv, Dv]
    # (q [T, Hq, D], k_pages, v_pages, block_tables, cu_seqlens, cached_lens) -> [T, Hq, D]
    prefill_attention: Callable
    decode_attention: Callable  # (q [B, Hq, D], k_pages, v_pages, block_tables, seq_lens) -> [B, Hq, D]
    rmsnorm: Callable  # (x, weight, eps) -> x's shape
    add_rmsnorm: Callable  # (x, residual, weight, eps) -> (normed, x + residual)
    gated_rmsnorm: Callable  # (x, gate, weight, eps) -> x's shape
    # Speculation's verify and commit, T = k + 1 tokens per row ([B, T, ...] inputs), state read from slots:
    conv_verify: Callable  # (x [B, T, D], weight, conv_pool, slots) -> (out [B, T, D], window [B, D, K-1+T])
    gdr_verify: Callable  # (q, k, v, a, b, A_log, dt_bias, state_pool, slots) -> [B, T, Hv, Dv]; pool unchanged
    gdr_commit: Callable  # (q, k, v, a, b, A_log, dt_bias, state_pool, slots, accepted [B]) -> None: first
    #                       accepted[b] tokens applied to each slot


def gates(a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor):
    """(log-decay g in fp32, beta in b's dtype), as GatedDeltaNet.forward computes them."""
    return -A_log.float().exp() * F.softplus(a.float() + dt_bias.float()), b.sigmoid()


def _torch_conv_prefill(x, weight, cu_seqlens, conv_pool, slots):
    bounds = cu_seqlens.tolist()
    out = torch.empty_like(x)
    for i, slot in enumerate(slots.tolist()):
        part = slice(bounds[i], bounds[i + 1])
        y, state = conv_ref.causal_conv1d(x[None, part], weight, conv_pool[slot][None])
        out[part] = y[0]
        conv_pool[slot] = state[0]
    return out


def _torch_conv_decode(x, weight, conv_pool, slots):
    index = slots.long()
    out, state = conv_ref.causal_conv1d_update(x, conv_pool[index], weight)
    conv_pool[index] = state.to(conv_pool.dtype)
    return out


def _torch_gdr_prefill(q, k, v, a, b, A_log, dt_bias, cu_seqlens, state_pool, slots):
    g, beta = gates(a, b, A_log, dt_bias)
    bounds = cu_seqlens.tolist()
    out = v.new_empty(v.shape)
    for i, slot in enumerate(slots.tolist()):
        part = slice(bounds[i], bounds[i + 1])
        o, state = gdr_ref.chunk_gated_delta_rule(q[None, part], k[None, part], v[None, part], g[None, part],
                                                  beta[None, part], initial_state=state_pool[slot][None])
        out[part] = o[0]
        state_pool[slot] = state[0]
    return out


def _torch_gdr_decode(q, k, v, a, b, A_log, dt_bias, state_pool, slots):
    g, beta = gates(a, b, A_log, dt_bias)
    index = slots.long()
    out, state = gdr_ref.recurrent_gated_delta_rule(q[:, None], k[:, None], v[:, None], g[:, None], beta[:, None],
                                                    initial_state=state_pool[index])
    state_pool[index] = state
    return out[:, 0]


def _torch_conv_verify(x, weight, conv_pool, slots):
    state = conv_pool.index_select(0, slots.long())
    out, _ = conv_ref.causal_conv1d(x, weight, state)
    window = torch.cat([state.to(weight.dtype), x.transpose(1, 2).to(weight.dtype)], dim=-1)
    return out, window


def _torch_gdr_verify(q, k, v, a, b, A_log, dt_bias, state_pool, slots):
    g, beta = gates(a, b, A_log, dt_bias)
    out, _ = gdr_ref.recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state_pool.index_select(0, slots.long()))
    return out


def _torch_gdr_commit(q, k, v, a, b, A_log, dt_bias, state_pool, slots, accepted):
    # Tokens past accepted[b] get log-decay 0 and beta 0: an exact identity update of the state.
    g, beta = gates(a, b, A_log, dt_bias)
    keep = (torch.arange(q.shape[1], device=q.device)[None, :] < accepted.to(q.device)[:, None])[..., None]
    index = slots.long()
    _, state = gdr_ref.recurrent_gated_delta_rule(q, k, v, g.masked_fill(~keep, 0.0), beta.masked_fill(~keep, 0.0),
                                                  initial_state=state_pool.index_select(0, index))
    state_pool.index_copy_(0, index, state)


def torch_kernels() -> Kernels:
    """The plain torch references behind the Triton kernels' signatures (CPU, or a check on GPU)."""
    return Kernels("torch", _torch_conv_prefill, _torch_conv_decode, _torch_gdr_prefill, _torch_gdr_decode,
                   paged_prefill_ref.paged_prefill_attention, paged_ref.paged_decode_attention, norm_ref.rmsnorm,
                   norm_ref.add_rmsnorm, gated_norm_ref.gated_rmsnorm, _torch_conv_verify, _torch_gdr_verify,
                   _torch_gdr_commit)


def triton_kernels() -> Kernels:
    """The Triton kernels (imported here, so TRITON_INTERPRET set beforehand takes effect)."""
    from qwen35.runtime.kernels.causal_conv1d import triton as conv_triton
    from qwen35.runtime.kernels.gated_delta_rule.triton_decode import fused_recurrent_gated_delta_rule_update
    from qwen35.runtime.kernels.gated_delta_rule import triton_verify
    from qwen35.runtime.kernels.gated_delta_rule.triton_prefill import chunk_gated_delta_rule_varlen
    from qwen35.runtime.kernels.gated_rmsnorm import triton as gated_norm_triton
    from qwen35.runtime.kernels.paged_attention import triton as paged_triton
    from qwen35.runtime.kernels.paged_prefill_attention import triton as paged_prefill_triton
    from qwen35.runtime.kernels.rmsnorm import triton as norm_triton

    return Kernels("triton", conv_triton.causal_conv1d_varlen, conv_triton.causal_conv1d_update,
                   chunk_gated_delta_rule_varlen, fused_recurrent_gated_delta_rule_update,
                   paged_prefill_triton.paged_prefill_attention, paged_triton.paged_decode_attention,
                   norm_triton.rmsnorm, norm_triton.add_rmsnorm, gated_norm_triton.gated_rmsnorm,
                   triton_verify.causal_conv1d_verify, triton_verify.fused_recurrent_gated_delta_rule_verify,
                   triton_verify.fused_recurrent_gated_delta_rule_commit)


def select_kernels(device: torch.device, choice: str = "auto") -> Kernels:
    """'auto': Triton on CUDA, torch on CPU; 'triton' or 'torch' force one (Triton on CPU needs TRITON_INTERPRET=1)."""
    if choice == "auto":
        choice = "triton" if device.type == "cuda" else "torch"
    if choice == "triton":
        return triton_kernels()
    if choice == "torch":
        return torch_kernels()
    raise ValueError(f"unknown kernel set {choice!r}: choose auto, triton or torch")
