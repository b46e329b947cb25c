"""Speculative verify and commit for Gated DeltaNet in Triton: a few launches per layer, state in the slot pool.

A verify runs T = k + 1 tokens per row ([last token, k drafts]) whose GDN state must not absorb
the rejected drafts (see the verify mode in runtime/model/linear_attention.py): the pool is read,
never written, during the verify, and a commit afterwards advances each row's slot by its
accepted prefix only (the conv's twin, causal_conv1d_verify, is in kernels/causal_conv1d).

  - `fused_recurrent_gated_delta_rule_verify` (one launch) gives the outputs of all T tokens
    and leaves the pool alone; `fused_recurrent_gated_delta_rule_commit` (one launch) re-runs
    the first accepted[b] tokens from the untouched slot and writes the final state back.
    Recompute rather than per-token snapshots: the commit pass reads and writes each state
    tile once and no weights, and nothing of size T * state is kept between the two calls.

The recurrence is triton_decode's, token after token: each program owns one (row, value head,
BV-wide slice of the value dim), keeps its [Dk, BV] fp32 state tile in registers across the
tokens, and per token computes the gates from the raw projections (gate_values), L2-normalises
q and k of the key head serving the value head, scales q by Dk^-0.5, and applies
    S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q.
So a committed state is bit for bit the one the same tokens decoded one by one would leave.

Inputs are the verify path's as it has them: q, k [B, T, Hk, Dk] and v [B, T, Hv, Dv] as views
into the conv output, raw a, b [B, T, Hv]; only the last dim must be contiguous. A negative slot
marks a padding row: the pool is neither read nor written for it and its outputs are zero.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qwen35.runtime.kernels.gated_delta_rule.triton_decode import check_inputs, gate_values


@triton.jit
def _recurrent_verify_kernel(q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, a_log_ptr, dt_bias_ptr, state_ptr, slot_ptr,
                             accepted_ptr, o_ptr, length,
                             stride_q_row, stride_q_tok, stride_q_head, stride_k_row, stride_k_tok, stride_k_head,
                             stride_v_row, stride_v_tok, stride_v_head, stride_a_row, stride_a_tok,
                             stride_b_row, stride_b_tok, stride_o_row, stride_o_tok, stride_o_head, scale,
                             NUM_V_HEADS: tl.constexpr, GROUP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                             BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr, COMMIT: tl.constexpr):
    v_block = tl.program_id(0)
    row = tl.program_id(1) // NUM_V_HEADS
    head = tl.program_id(1) % NUM_V_HEADS
    k_head = head // GROUP
    slot = tl.load(slot_ptr + row).to(tl.int64)
    live = slot >= 0
    offs_k = tl.arange(0, BK)
    offs_v = v_block * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV

    # State pool layout [slots, Hv, Dk, Dv], contiguous: this tile is rows offs_k, columns offs_v.
    tile = state_ptr + (slot * NUM_V_HEADS + head) * (DK * DV) + offs_k[:, None] * DV + offs_v[None, :]
    tile_ok = tl.where(live, k_ok[:, None] & v_ok[None, :], False)
    state = tl.load(tile, mask=tile_ok, other=0.0)
    a_log = tl.load(a_log_ptr + head)
    dt_bias = tl.load(dt_bias_ptr + head)

    row64 = row.to(tl.int64)
    q_row = q_ptr + row64 * stride_q_row + k_head * stride_q_head + offs_k
    k_row = k_ptr + row64 * stride_k_row + k_head * stride_k_head + offs_k
    v_row = v_ptr + row64 * stride_v_row + head * stride_v_head + offs_v
    a_row = a_ptr + row64 * stride_a_row + head
    b_row = b_ptr + row64 * stride_b_row + head
    o_row = o_ptr + row64 * stride_o_row + head * stride_o_head + offs_v
    if COMMIT:
        count = tl.minimum(tl.maximum(tl.load(accepted_ptr + row).to(tl.int32), 0), length)
    else:
        count = length
    # The gates of all the row's tokens in one vector load; token t's are picked out in the loop
    # (a sum with one nonzero term: exact).
    offs_t = tl.arange(0, BT)
    t_ok = offs_t < count
    g_all, beta_all = gate_values(tl.load(a_row + offs_t * stride_a_tok, mask=t_ok, other=0.0),
                                  tl.load(b_row + offs_t * stride_b_tok, mask=t_ok, other=0.0), a_log, dt_bias)
    for t in range(0, count):
        k = tl.load(k_row + t * stride_k_tok, mask=k_ok, other=0.0).to(tl.float32)
        v = tl.load(v_row + t * stride_v_tok, mask=v_ok, other=0.0).to(tl.float32)
        g = tl.sum(tl.where(offs_t == t, g_all, 0.0))
        beta = tl.sum(tl.where(offs_t == t, beta_all, 0.0))
        # 1e-6: the reference's L2-norm epsilon.
        k = k * tl.rsqrt(tl.sum(k * k) + 1e-6)
        state = state * tl.exp(g)
        update = beta * (v - tl.sum(state * k[:, None], axis=0))
        state = state + k[:, None] * update[None, :]
        if not COMMIT:
            q = tl.load(q_row + t * stride_q_tok, mask=k_ok, other=0.0).to(tl.float32)
            q = q * tl.rsqrt(tl.sum(q * q) + 1e-6) * scale
            out = tl.sum(state * q[:, None], axis=0)
            tl.store(o_row + t * stride_o_tok, tl.where(live, out, 0.0).to(o_ptr.dtype.element_ty), mask=v_ok)
    if COMMIT:
        tl.store(tile, state, mask=tile_ok)


def _launch(q, k, v, a, b, A_log, dt_bias, state_pool, slots, accepted, out, scale, block_v, commit: bool):
    rows, length, num_k_heads, dk = q.shape
    num_v_heads, dv = v.shape[-2:]
    check_inputs(q, k, v, a, b, state_pool)
    if k.shape[:2] != (rows, length) or v.shape[:2] != (rows, length) or a.shape[:2] != (rows, length) \
            or b.shape[:2] != (rows, length):
        raise ValueError(f"q, k, v, a and b need the same [rows, tokens] = [{rows}, {length}] leading dims")
    if slots.shape != (rows,) or slots.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slots must be {rows} integer slot ids, got {slots.dtype} {tuple(slots.shape)}")
    if rows == 0 or length == 0:
        return
    scale = dk ** -0.5 if scale is None else scale
    if block_v is None:
        # As decode: narrower tiles give every SM a program at small batch; wider ones amortise q, k.
        block_v = 16 if rows * num_v_heads < 256 else 32
    block_v = min(block_v, triton.next_power_of_2(dv))
    out_strides = (0, 0, 0) if out is None else (out.stride(0), out.stride(1), out.stride(2))
    grid = (triton.cdiv(dv, block_v), rows * num_v_heads)
    _recurrent_verify_kernel[grid](
        q, k, v, a, b, A_log, dt_bias, state_pool, slots, slots if accepted is None else accepted,
        state_pool if out is None else out, length,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        *out_strides, scale,
        NUM_V_HEADS=num_v_heads, GROUP=num_v_heads // num_k_heads, DK=dk, DV=dv,
        BK=triton.next_power_of_2(dk), BV=block_v, BT=triton.next_power_of_2(length), COMMIT=commit,
        num_warps=4)


def fused_recurrent_gated_delta_rule_verify(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    A_log: torch.Tensor, dt_bias: torch.Tensor, state_pool: torch.Tensor, slots: torch.Tensor,
    scale: float | None = None, out: torch.Tensor | None = None, block_v: int | None = None,
) -> torch.Tensor:
    """Outputs [B, T, Hv, Dv] of T tokens per row from state_pool[slots[b]]; the pool is not written."""
    rows, length = q.shape[:2]
    num_v_heads, dv = v.shape[-2:]
    if out is None:
        out = torch.empty(rows, length, num_v_heads, dv, dtype=v.dtype, device=v.device)
    elif out.shape != (rows, length, num_v_heads, dv) or out.stride(-1) != 1:
        raise ValueError(f"out must be [{rows}, {length}, {num_v_heads}, {dv}] with a contiguous last dim")
    _launch(q, k, v, a, b, A_log, dt_bias, state_pool, slots, None, out, scale, block_v, commit=False)
    return out


def fused_recurrent_gated_delta_rule_commit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    A_log: torch.Tensor, dt_bias: torch.Tensor, state_pool: torch.Tensor, slots: torch.Tensor,
    accepted: torch.Tensor, block_v: int | None = None,
) -> None:
    """Advance state_pool[slots[b]] in place by the first accepted[b] (0..T) of the verify's tokens."""
    rows = q.shape[0]
    if accepted.shape != (rows,) or accepted.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"accepted must be {rows} integer counts, got {accepted.dtype} {tuple(accepted.shape)}")
    _launch(q, k, v, a, b, A_log, dt_bias, state_pool, slots, accepted, None, None, block_v, commit=True)
