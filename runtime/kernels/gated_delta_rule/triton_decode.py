"""Fused recurrent gated delta rule for decode in Triton: one launch per layer and step.

One token per sequence. Each program owns one (sequence, value head, BV-wide slice of the
value dim): it computes the gates from the raw projections (g = -exp(A_log) * softplus(a +
dt_bias), beta = sigmoid(b), in fp32), L2-normalises q and k of the key head that serves this
value head, scales q by Dk^-0.5, then reads its [Dk, BV] tile of the fp32 state S from the
slot pool, applies
    S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
and writes the tile back in place. The state tile is read once and written once: at dk = dv =
128 a step moves 2 * 64 KiB per value head and sequence, which is the whole cost.

Inputs may be views (q, k, v sliced out of the conv output): only the last dim must be
contiguous. A negative slot marks a padding entry (CUDA-graph batch slot with no sequence):
the pool is left alone and its output row is zero.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def gate_values(a, b, a_log, dt_bias):
    """(g, beta) in fp32: g = -exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b)."""
    x = a.to(tl.float32) + dt_bias.to(tl.float32)
    # torch's softplus: linear above 20 (threshold), where log(1 + e^x) == x in fp32 anyway.
    softplus = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    return -tl.exp(a_log.to(tl.float32)) * softplus, tl.sigmoid(b.to(tl.float32))


@triton.jit
def _recurrent_decode_kernel(q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, a_log_ptr, dt_bias_ptr, state_ptr, slot_ptr, o_ptr,
                             stride_q_tok, stride_q_head, stride_k_tok, stride_k_head,
                             stride_v_tok, stride_v_head, stride_a_tok, stride_b_tok,
                             stride_o_tok, stride_o_head, scale,
                             NUM_V_HEADS: tl.constexpr, GROUP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                             BK: tl.constexpr, BV: tl.constexpr):
    v_block = tl.program_id(0)
    seq = tl.program_id(1) // NUM_V_HEADS
    head = tl.program_id(1) % NUM_V_HEADS
    k_head = head // GROUP
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    live = slot >= 0
    offs_k = tl.arange(0, BK)
    offs_v = v_block * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV

    seq64 = seq.to(tl.int64)
    q = tl.load(q_ptr + seq64 * stride_q_tok + k_head * stride_q_head + offs_k, mask=k_ok, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + seq64 * stride_k_tok + k_head * stride_k_head + offs_k, mask=k_ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + seq64 * stride_v_tok + head * stride_v_head + offs_v, mask=v_ok, other=0.0).to(tl.float32)
    g, beta = gate_values(tl.load(a_ptr + seq64 * stride_a_tok + head), tl.load(b_ptr + seq64 * stride_b_tok + head),
                          tl.load(a_log_ptr + head), tl.load(dt_bias_ptr + head))
    # 1e-6: the reference's L2-norm epsilon.
    q = q * tl.rsqrt(tl.sum(q * q) + 1e-6) * scale
    k = k * tl.rsqrt(tl.sum(k * k) + 1e-6)

    # State pool layout [slots, Hv, Dk, Dv], contiguous: this tile is rows offs_k, columns offs_v.
    tile = state_ptr + (slot * NUM_V_HEADS + head) * (DK * DV) + offs_k[:, None] * DV + offs_v[None, :]
    tile_ok = tl.where(live, k_ok[:, None] & v_ok[None, :], False)
    state = tl.load(tile, mask=tile_ok, other=0.0)
    state = state * tl.exp(g)
    update = beta * (v - tl.sum(state * k[:, None], axis=0))
    state = state + k[:, None] * update[None, :]
    out = tl.sum(state * q[:, None], axis=0)
    tl.store(tile, state, mask=tile_ok)
    tl.store(o_ptr + seq64 * stride_o_tok + head * stride_o_head + offs_v,
             tl.where(live, out, 0.0).to(o_ptr.dtype.element_ty), mask=v_ok)


def check_inputs(q, k, v, a, b, state_pool):
    """Raise ValueError unless the shapes, dtypes and strides fit the gated delta rule kernels."""
    num_k_heads, dk = q.shape[-2:]
    num_v_heads, dv = v.shape[-2:]
    if k.shape != q.shape or num_v_heads % num_k_heads:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must match, and value heads "
                         f"({num_v_heads}) must be a multiple of key heads ({num_k_heads})")
    if state_pool.dtype != torch.float32 or state_pool.shape[1:] != (num_v_heads, dk, dv) \
            or not state_pool.is_contiguous():
        raise ValueError(f"state pool must be contiguous fp32 [slots, {num_v_heads}, {dk}, {dv}], "
                         f"got {state_pool.dtype} {tuple(state_pool.shape)}")
    if any(x.stride(-1) != 1 for x in (q, k, v, a, b)):
        raise ValueError("q, k, v, a and b need a contiguous last dimension")
    if a.shape[-1] != num_v_heads or b.shape[-1] != num_v_heads:
        raise ValueError(f"a and b need one value per value head ({num_v_heads})")


def fused_recurrent_gated_delta_rule_update(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    A_log: torch.Tensor, dt_bias: torch.Tensor, state_pool: torch.Tensor, slots: torch.Tensor,
    scale: float | None = None, out: torch.Tensor | None = None, block_v: int | None = None,
) -> torch.Tensor:
    """One decode step for q, k [B, Hk, Dk], v [B, Hv, Dv], raw a, b [B, Hv]; updates state_pool[slots] in place."""
    check_inputs(q, k, v, a, b, state_pool)
    batch, num_k_heads, dk = q.shape
    num_v_heads, dv = v.shape[-2:]
    scale = dk ** -0.5 if scale is None else scale
    out = torch.empty(batch, num_v_heads, dv, dtype=v.dtype, device=v.device) if out is None else out
    if batch == 0:
        return out
    if block_v is None:
        # Small batches need narrower tiles to give every SM a program; wider tiles amortise q, k.
        block_v = 16 if batch * num_v_heads < 256 else 32
    block_v = min(block_v, triton.next_power_of_2(dv))
    grid = (triton.cdiv(dv, block_v), batch * num_v_heads)
    _recurrent_decode_kernel[grid](
        q, k, v, a, b, A_log, dt_bias, state_pool, slots, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        a.stride(0), b.stride(0), out.stride(0), out.stride(1), scale,
        NUM_V_HEADS=num_v_heads, GROUP=num_v_heads // num_k_heads, DK=dk, DV=dv,
        BK=triton.next_power_of_2(dk), BV=block_v, num_warps=4)
    return out
