"""Chunked gated delta rule for prefill in Triton, over packed variable-length batches.

Same function as the reference's chunk_gated_delta_rule (chunk 64), with the gates computed
from the raw projections and the fp32 state read from and written back to a slot pool. Within
a chunk, with G the running sum of g and S0 the state entering it, the delta-rule updates are
u = W - C S0 where (I + A) [W | C] = [beta v | beta exp(G) k] and A is the strictly lower
matrix A_ij = beta_i exp(G_i - G_j) k_i.k_j. Three launches:

1. intra-chunk (parallel over chunks x value heads): cumsum of g, A, (I + A)^-1 by recursive
   2x2 block inversion (six doublings of two 64x64 products each), then W and C;
2. state (sequential over each sequence's chunks, parallel over sequences x heads x BV):
   u = W - C S, stores S entering each chunk and u, S <- exp(G_last) S + (k decayed to the
   chunk end)^T u; the final S goes back to the pool;
3. output (parallel over chunks x heads x BV): o = (q exp(G)) S + (q k^T * decay, causal) u.

Chunks never straddle sequences: each sequence's tokens are cut into 64-token chunks from its
own start, the last one partial (its padding rows carry k = v = 0, beta = 0, g = 0). The chunk
list is built on the host side from cu_seqlens (one device sync: prefill runs eager), and
cu_seqlens[-1] must equal T. A negative slot starts its sequence from a zero state and keeps
no final state.
Intermediates (W, C, u, per-chunk S) are kept in the input dtype, as fla does; matrix products
run in fp32 (exact IEEE for fp32 inputs, TF32 otherwise) and the running state is fp32 always.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qwen35.runtime.kernels.causal_conv1d.triton import token_blocks
from qwen35.runtime.kernels.gated_delta_rule.triton_decode import check_inputs, gate_values

CHUNK = 64


@triton.jit
def _unit_rows(ptr, tokens, tok_ok, stride_tok, offs_k, k_ok):
    """[BT, BK] rows of ptr at `tokens` (padding rows zero), each scaled to unit L2 norm."""
    x = tl.load(ptr + tokens.to(tl.int64)[:, None] * stride_tok + offs_k[None, :],
                mask=tok_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
    return x * tl.rsqrt(tl.sum(x * x, axis=1) + 1e-6)[:, None]


@triton.jit
def _intra_chunk_kernel(k_ptr, v_ptr, a_ptr, b_ptr, a_log_ptr, dt_bias_ptr, cu_ptr, chunk_seq_ptr, chunk_start_ptr,
                        gcum_ptr, w_ptr, c_ptr, stride_k_tok, stride_k_head, stride_v_tok, stride_v_head,
                        stride_a_tok, stride_b_tok,
                        NUM_V_HEADS: tl.constexpr, GROUP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                        BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT_PRECISION: tl.constexpr):
    chunk = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.load(chunk_seq_ptr + chunk)
    first = tl.load(chunk_start_ptr + chunk)
    seq_end = tl.load(cu_ptr + seq + 1)
    offs_t = tl.arange(0, BT)
    tokens = first + offs_t
    tok_ok = tokens < seq_end
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV
    tok64 = tokens.to(tl.int64)

    k_head_ptr = k_ptr + (head // GROUP) * stride_k_head
    g, beta = gate_values(tl.load(a_ptr + tok64 * stride_a_tok + head, mask=tok_ok, other=0.0),
                          tl.load(b_ptr + tok64 * stride_b_tok + head, mask=tok_ok, other=0.0),
                          tl.load(a_log_ptr + head), tl.load(dt_bias_ptr + head))
    g = tl.where(tok_ok, g, 0.0)
    beta = tl.where(tok_ok, beta, 0.0)
    cum = tl.cumsum(g, axis=0)
    tl.store(gcum_ptr + tok64 * NUM_V_HEADS + head, cum, mask=tok_ok)

    # A_ij = beta_i exp(G_i - G_j) k_i.k_j below the diagonal (padding rows: beta = 0, so zero).
    rows = offs_t[:, None]
    cols = offs_t[None, :]
    below = rows > cols
    k = _unit_rows(k_head_ptr, tokens, tok_ok, stride_k_tok, offs_k, k_ok)
    gram = tl.dot(k, tl.trans(k), input_precision=DOT_PRECISION)
    a_mat = tl.where(below, beta[:, None] * tl.exp(tl.where(below, cum[:, None] - cum[None, :], 0.0)) * gram, 0.0)

    # X = (I + A)^-1 by recursive block inversion: with X holding the inverses of the diagonal
    # blocks of size s, each pair of blocks [[P, 0], [L, Q]] gets its corner -Q^-1 L P^-1,
    # i.e. X <- X - X A_s X with A_s the corner blocks of A. Six doublings reach 64.
    inverse = tl.where(rows == cols, 1.0, 0.0)
    for level in tl.static_range(6):
        size = 1 << level
        corner = (rows // (2 * size) == cols // (2 * size)) & (rows // size > cols // size)
        step = tl.dot(inverse, tl.where(corner, a_mat, 0.0), input_precision=DOT_PRECISION)
        inverse -= tl.dot(step, inverse, input_precision=DOT_PRECISION)

    # W, then C, each stored before the next operand is loaded (k again, from cache): the
    # 64x128 operands are what would push this program past the register file.
    v = tl.load(v_ptr + tok64[:, None] * stride_v_tok + head * stride_v_head + offs_v[None, :],
                mask=tok_ok[:, None] & v_ok[None, :], other=0.0).to(tl.float32)
    w = tl.dot(inverse, v * beta[:, None], input_precision=DOT_PRECISION)
    tl.store(w_ptr + (tok64 * NUM_V_HEADS + head)[:, None] * DV + offs_v[None, :],
             w.to(w_ptr.dtype.element_ty), mask=tok_ok[:, None] & v_ok[None, :])
    k = _unit_rows(k_head_ptr, tokens, tok_ok, stride_k_tok, offs_k, k_ok)
    c = tl.dot(inverse, k * (beta * tl.exp(cum))[:, None], input_precision=DOT_PRECISION)
    tl.store(c_ptr + (tok64 * NUM_V_HEADS + head)[:, None] * DK + offs_k[None, :],
             c.to(c_ptr.dtype.element_ty), mask=tok_ok[:, None] & k_ok[None, :])


@triton.jit
def _chunk_state_kernel(k_ptr, gcum_ptr, w_ptr, c_ptr, u_ptr, h_ptr, state_ptr, slot_ptr, cu_ptr,
                        chunk_start_ptr, chunk_offsets_ptr, stride_k_tok, stride_k_head,
                        NUM_V_HEADS: tl.constexpr, GROUP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                        BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT_PRECISION: tl.constexpr):
    v_block = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    live = slot >= 0
    seq_end = tl.load(cu_ptr + seq + 1)
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = v_block * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV
    tile_ok = k_ok[:, None] & v_ok[None, :]
    pool_ok = tl.where(live, tile_ok, False)
    tile_offsets = offs_k[:, None] * DV + offs_v[None, :]

    pool_tile = state_ptr + (slot * NUM_V_HEADS + head) * (DK * DV) + tile_offsets
    state = tl.load(pool_tile, mask=pool_ok, other=0.0)
    k_head_ptr = k_ptr + (head // GROUP) * stride_k_head
    # int64 bounds make the loop index int64 when compiled: chunk * Hv * Dk * Dv can pass 2^31.
    chunk_begin = tl.load(chunk_offsets_ptr + seq).to(tl.int64)
    chunk_end = tl.load(chunk_offsets_ptr + seq + 1).to(tl.int64)
    for chunk in range(chunk_begin, chunk_end):
        first = tl.load(chunk_start_ptr + chunk)
        tokens = first + offs_t
        tok_ok = tokens < seq_end
        tok64 = tokens.to(tl.int64)
        tl.store(h_ptr + (chunk * NUM_V_HEADS + head) * (DK * DV) + tile_offsets,
                 state.to(h_ptr.dtype.element_ty), mask=tile_ok)
        row = (tok64 * NUM_V_HEADS + head)[:, None]
        c = tl.load(c_ptr + row * DK + offs_k[None, :], mask=tok_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + row * DV + offs_v[None, :], mask=tok_ok[:, None] & v_ok[None, :], other=0.0)
        u = w.to(tl.float32) - tl.dot(c.to(tl.float32), state, input_precision=DOT_PRECISION)
        tl.store(u_ptr + row * DV + offs_v[None, :], u.to(u_ptr.dtype.element_ty),
                 mask=tok_ok[:, None] & v_ok[None, :])

        # Inline rather than _unit_rows: a nested call inside a loop is slow under the interpreter.
        k = tl.load(k_head_ptr + tok64[:, None] * stride_k_tok + offs_k[None, :],
                    mask=tok_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
        k = k * tl.rsqrt(tl.sum(k * k, axis=1) + 1e-6)[:, None]
        cum = tl.load(gcum_ptr + tok64 * NUM_V_HEADS + head, mask=tok_ok, other=0.0)
        last = tl.minimum(first + BT, seq_end) - 1
        cum_last = tl.load(gcum_ptr + last.to(tl.int64) * NUM_V_HEADS + head)
        # exp(G_last - G_s): how much of token s's write survives to the end of the chunk.
        k_to_end = k * tl.where(tok_ok, tl.exp(cum_last - cum), 0.0)[:, None]
        state = state * tl.exp(cum_last) + tl.dot(tl.trans(k_to_end), u, input_precision=DOT_PRECISION)
    tl.store(pool_tile, state, mask=pool_ok)


@triton.jit
def _chunk_output_kernel(q_ptr, k_ptr, gcum_ptr, u_ptr, h_ptr, o_ptr, cu_ptr, chunk_seq_ptr, chunk_start_ptr,
                         stride_q_tok, stride_q_head, stride_k_tok, stride_k_head, stride_o_tok, stride_o_head,
                         scale, NUM_V_HEADS: tl.constexpr, GROUP: tl.constexpr, DK: tl.constexpr,
                         DV: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                         DOT_PRECISION: tl.constexpr):
    chunk = tl.program_id(0)
    head = tl.program_id(1)
    v_block = tl.program_id(2)
    seq = tl.load(chunk_seq_ptr + chunk)
    first = tl.load(chunk_start_ptr + chunk)
    seq_end = tl.load(cu_ptr + seq + 1)
    offs_t = tl.arange(0, BT)
    tokens = first + offs_t
    tok_ok = tokens < seq_end
    tok64 = tokens.to(tl.int64)
    offs_k = tl.arange(0, BK)
    offs_v = v_block * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV

    k_head = head // GROUP
    q = _unit_rows(q_ptr + k_head * stride_q_head, tokens, tok_ok, stride_q_tok, offs_k, k_ok) * scale
    k = _unit_rows(k_ptr + k_head * stride_k_head, tokens, tok_ok, stride_k_tok, offs_k, k_ok)
    cum = tl.load(gcum_ptr + tok64 * NUM_V_HEADS + head, mask=tok_ok, other=0.0)
    state = tl.load(h_ptr + (chunk.to(tl.int64) * NUM_V_HEADS + head) * (DK * DV)
                    + offs_k[:, None] * DV + offs_v[None, :], mask=k_ok[:, None] & v_ok[None, :], other=0.0)
    row = (tok64 * NUM_V_HEADS + head)[:, None]
    u = tl.load(u_ptr + row * DV + offs_v[None, :], mask=tok_ok[:, None] & v_ok[None, :], other=0.0)

    # Padding rows load G = 0: keep them out so their (discarded) decays cannot overflow.
    causal = (offs_t[:, None] >= offs_t[None, :]) & tok_ok[:, None]
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    scores = tl.where(causal, scores * tl.exp(tl.where(causal, cum[:, None] - cum[None, :], 0.0)), 0.0)
    out = tl.dot(q * tl.exp(cum)[:, None], state.to(tl.float32), input_precision=DOT_PRECISION)
    out += tl.dot(scores, u.to(tl.float32), input_precision=DOT_PRECISION)
    tl.store(o_ptr + tok64[:, None] * stride_o_tok + head * stride_o_head + offs_v[None, :],
             out.to(o_ptr.dtype.element_ty), mask=tok_ok[:, None] & v_ok[None, :])


def chunk_gated_delta_rule_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    A_log: torch.Tensor, dt_bias: torch.Tensor, cu_seqlens: torch.Tensor, state_pool: torch.Tensor,
    slots: torch.Tensor, scale: float | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed prefill of q, k [T, Hk, Dk], v [T, Hv, Dv], raw a, b [T, Hv]; state_pool[slots[b]] in and out."""
    check_inputs(q, k, v, a, b, state_pool)
    num_tokens, num_k_heads, dk = q.shape
    num_v_heads, dv = v.shape[-2:]
    num_seqs = cu_seqlens.numel() - 1
    scale = dk ** -0.5 if scale is None else scale
    out = torch.empty(num_tokens, num_v_heads, dv, dtype=v.dtype, device=v.device) if out is None else out
    if num_seqs == 0:
        return out
    cu = cu_seqlens.to(torch.int32)
    chunk_seq, chunk_start = token_blocks(cu, CHUNK)
    num_chunks = chunk_seq.numel()
    counts = torch.bincount(chunk_seq, minlength=num_seqs)
    chunk_offsets = torch.zeros(num_seqs + 1, dtype=torch.int32, device=q.device)
    chunk_offsets[1:] = torch.cumsum(counts, 0)

    work_dtype = q.dtype
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    gcum = torch.empty(num_tokens, num_v_heads, dtype=torch.float32, device=q.device)
    w = torch.empty(num_tokens, num_v_heads, dv, dtype=work_dtype, device=q.device)
    c = torch.empty(num_tokens, num_v_heads, dk, dtype=work_dtype, device=q.device)
    u = torch.empty_like(w)
    h = torch.empty(num_chunks, num_v_heads, dk, dv, dtype=work_dtype, device=q.device)
    heads = dict(NUM_V_HEADS=num_v_heads, GROUP=num_v_heads // num_k_heads, DK=dk, DV=dv, BT=CHUNK,
                 BK=triton.next_power_of_2(dk), DOT_PRECISION=precision)
    if num_chunks:
        _intra_chunk_kernel[(num_chunks, num_v_heads)](
            k, v, a, b, A_log, dt_bias, cu, chunk_seq, chunk_start, gcum, w, c,
            k.stride(0), k.stride(1), v.stride(0), v.stride(1), a.stride(0), b.stride(0),
            BV=triton.next_power_of_2(dv), **heads, num_warps=8)
    block_v = min(64, triton.next_power_of_2(dv))
    _chunk_state_kernel[(triton.cdiv(dv, block_v), num_v_heads, num_seqs)](
        k, gcum, w, c, u, h, state_pool, slots, cu, chunk_start, chunk_offsets, k.stride(0), k.stride(1),
        BV=block_v, **heads, num_warps=4)
    if num_chunks:
        _chunk_output_kernel[(num_chunks, num_v_heads, triton.cdiv(dv, block_v))](
            q, k, gcum, u, h, out, cu, chunk_seq, chunk_start, q.stride(0), q.stride(1), k.stride(0),
            k.stride(1), out.stride(0), out.stride(1), scale, BV=block_v, **heads, num_warps=4)
    return out
