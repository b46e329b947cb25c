"""The one set of ops a forward runs, chosen once per model: Triton on CUDA, the torch references elsewhere.

Every op has one signature, the Triton kernel's, and its torch reference takes exactly the same
arguments (packed tokens, state read and written in place through slot ids, KV read through
block tables, GDN gates from the raw projections), so a set is just a table of functions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

KERNEL_CHOICES = ("auto", "triton", "torch")


@dataclass(frozen=True)
class KernelSet:
    """One implementation of every op the layers call."""

    name: str
    conv_prefill: Callable  # (x [T, D], weight [D, K], cu_seqlens, conv_pool, slots) -> [T, D]
    conv_decode: Callable  # (x [B, D], weight, conv_pool, slots) -> [B, D]
    conv_verify: Callable  # (x [B, T, D], weight, conv_pool, slots) -> (out [B, T, D], window [B, D, K-1+T])
    gdr_prefill: Callable  # (q, k, v, a, b, A_log, dt_bias, cu_seqlens, state_pool, slots) -> [T, Hv, Dv]
    gdr_decode: Callable  # (q, k, v, a, b, A_log, dt_bias, state_pool, slots) -> [B, Hv, Dv]
    gdr_verify: Callable  # ([B, T, ...] q, k, v, a, b, A_log, dt_bias, state_pool, slots) -> [B, T, Hv, Dv]
    gdr_commit: Callable  # (..., state_pool, slots, accepted [B]) -> None: first accepted[b] tokens applied
    # (q [T, Hq, D], k_pages, v_pages, block_tables, cu_seqlens, cached_lens) -> [T, Hq, D]
    prefill_attention: Callable
    decode_attention: Callable  # (q [B, Hq, D], k_pages, v_pages, block_tables, seq_lens) -> [B, Hq, D]
    rmsnorm: Callable  # (x, weight, eps) -> x's shape
    add_rmsnorm: Callable  # (x, residual, weight, eps) -> (normed, x + residual)
    gated_rmsnorm: Callable  # (x, gate, weight, eps) -> x's shape
    silu_mul: Callable  # (x [..., 2I]) -> [..., I]


def torch_kernels() -> KernelSet:
    """The plain torch references (the CPU set, and the oracle the Triton set is tested against)."""
    from qwen35.runtime.kernels.causal_conv1d import reference as conv
    from qwen35.runtime.kernels.gated_delta_rule import reference as gdr
    from qwen35.runtime.kernels.gated_rmsnorm import reference as gated_norm
    from qwen35.runtime.kernels.paged_attention import reference as decode_attention
    from qwen35.runtime.kernels.paged_prefill_attention import reference as prefill_attention
    from qwen35.runtime.kernels.rmsnorm import reference as norm
    from qwen35.runtime.kernels.silu_mul import reference as silu

    return KernelSet("torch", conv.causal_conv1d_varlen, conv.causal_conv1d_update, conv.causal_conv1d_verify,
                     gdr.chunk_gated_delta_rule_varlen, gdr.fused_recurrent_gated_delta_rule_update,
                     gdr.fused_recurrent_gated_delta_rule_verify, gdr.fused_recurrent_gated_delta_rule_commit,
                     prefill_attention.paged_prefill_attention, decode_attention.paged_decode_attention,
                     norm.rmsnorm, norm.add_rmsnorm, gated_norm.gated_rmsnorm, silu.silu_mul)


def triton_kernels() -> KernelSet:
    """The Triton kernels (imported here, so TRITON_INTERPRET set beforehand takes effect)."""
    from qwen35.runtime.kernels.causal_conv1d import triton as conv
    from qwen35.runtime.kernels.gated_delta_rule import triton_decode, triton_prefill, triton_verify
    from qwen35.runtime.kernels.gated_rmsnorm import triton as gated_norm
    from qwen35.runtime.kernels.paged_attention import triton as decode_attention
    from qwen35.runtime.kernels.paged_prefill_attention import triton as prefill_attention
    from qwen35.runtime.kernels.rmsnorm import triton as norm
    from qwen35.runtime.kernels.silu_mul import triton as silu

    return KernelSet("triton", conv.causal_conv1d_varlen, conv.causal_conv1d_update, conv.causal_conv1d_verify,
                     triton_prefill.chunk_gated_delta_rule_varlen, triton_decode.fused_recurrent_gated_delta_rule_update,
                     triton_verify.fused_recurrent_gated_delta_rule_verify,
                     triton_verify.fused_recurrent_gated_delta_rule_commit,
                     prefill_attention.paged_prefill_attention, decode_attention.paged_decode_attention,
                     norm.rmsnorm, norm.add_rmsnorm, gated_norm.gated_rmsnorm, silu.silu_mul)


def select_kernels(device: torch.device | str, choice: str = "auto") -> KernelSet:
    """'auto': Triton on CUDA, torch elsewhere; 'triton' or 'torch' force one (Triton on CPU needs TRITON_INTERPRET=1)."""
    if choice == "auto":
        choice = "triton" if torch.device(device).type == "cuda" else "torch"
    if choice == "triton":
        return triton_kernels()
    if choice == "torch":
        return torch_kernels()
    raise ValueError(f"unknown kernel set {choice!r}: choose one of {', '.join(KERNEL_CHOICES)}")
