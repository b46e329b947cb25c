"""Paged decode attention in Triton (split-K "flash decoding"), grouped-query heads.

One query token per sequence. A program owns (sequence, KV head, split of the sequence): it
loads the GROUP query heads that share the KV head as one [16+, D] tile, so every K/V row is
read from memory once per KV head, and streams its share of the keys BLOCK_N at a time with an
online softmax. Token t of a sequence is found through its block table (page t // page_size,
row t % page_size), gathered per token so any page size works. With several splits a second
small launch merges the partial outputs by their log-sum-exp. The split count depends only on
static sizes (batch, KV heads, block-table width), never on the lengths, so the launch is safe
to capture in a CUDA graph. Rows with seq_lens == 0 are padding and get zeros.

Cache layout as in the reference: k_cache, v_cache [num_pages, page_size, Hkv, D], any
strides with D contiguous; block_tables [B, max_pages] int32; seq_lens [B] counts the new token.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_N = 64
_MIN_TOKENS_PER_SPLIT = 256
_MAX_SPLITS = 64


@triton.jit
def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, table_ptr, len_ptr, o_ptr, part_o_ptr, part_lse_ptr,
                         stride_q_tok, stride_q_head, stride_k_page, stride_k_tok, stride_k_head,
                         stride_v_page, stride_v_tok, stride_v_head, stride_table, stride_o_tok, stride_o_head,
                         scale, NUM_Q_HEADS: tl.constexpr, GROUP: tl.constexpr, PAGE_SIZE: tl.constexpr,
                         HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr,
                         BLOCK_N: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq64 = seq.to(tl.int64)
    seq_len = tl.load(len_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    offs_g = tl.arange(0, BG)
    heads = kv_head * GROUP + offs_g
    g_ok = offs_g < GROUP
    offs_d = tl.arange(0, BD)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(q_ptr + seq64 * stride_q_tok + heads[:, None] * stride_q_head + offs_d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(DOT_DTYPE)

    m = tl.full([BG], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, BD], dtype=tl.float32)
    table_row = table_ptr + seq64 * stride_table
    for first in range(start, end, BLOCK_N):
        offs_n = first + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        page = tl.load(table_row + offs_n // PAGE_SIZE, mask=n_ok, other=0).to(tl.int64)
        row = (offs_n % PAGE_SIZE).to(tl.int64)
        kv_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + page[:, None] * stride_k_page + row[:, None] * stride_k_tok
                    + kv_head * stride_k_head + offs_d[None, :], mask=kv_ok, other=0.0)
        scores = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=DOT_PRECISION) * scale
        scores = tl.where(n_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))  # finite: every block has a live key
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + page[:, None] * stride_v_page + row[:, None] * stride_v_tok
                    + kv_head * stride_v_head + offs_d[None, :], mask=kv_ok, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision=DOT_PRECISION)
        m = m_new

    out = acc / tl.where(l > 0.0, l, 1.0)[:, None]  # an empty split (or padding row) gives zeros
    out_ok = g_ok[:, None] & d_ok[None, :]
    if NUM_SPLITS == 1:
        tl.store(o_ptr + seq64 * stride_o_tok + heads[:, None] * stride_o_head + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=out_ok)
    else:
        # Partials [B, Hq, NUM_SPLITS, D] fp32 and their log-sum-exp [B, Hq, NUM_SPLITS].
        part = (seq64 * NUM_Q_HEADS + heads) * NUM_SPLITS + split
        tl.store(part_o_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], out, mask=out_ok)
        lse = tl.where(l > 0.0, m + tl.log(tl.where(l > 0.0, l, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part, lse, mask=g_ok)


@triton.jit
def _merge_splits_kernel(part_o_ptr, part_lse_ptr, o_ptr, stride_o_tok, stride_o_head,
                         NUM_Q_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
                         BS: tl.constexpr, BD: tl.constexpr):
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BS)
    offs_d = tl.arange(0, BD)
    s_ok = offs_s < NUM_SPLITS
    d_ok = offs_d < HEAD_DIM
    part = (seq * NUM_Q_HEADS + head) * NUM_SPLITS + offs_s
    lse = tl.load(part_lse_ptr + part, mask=s_ok, other=float("-inf"))
    top = tl.max(lse, axis=0)
    weight = tl.where(lse > float("-inf"), tl.exp(lse - tl.where(top > float("-inf"), top, 0.0)), 0.0)
    partial = tl.load(part_o_ptr + part[:, None] * HEAD_DIM + offs_d[None, :],
                      mask=s_ok[:, None] & d_ok[None, :], other=0.0)
    total = tl.sum(weight, axis=0)
    out = tl.sum(weight[:, None] * partial, axis=0) / tl.where(total > 0.0, total, 1.0)
    tl.store(o_ptr + seq * stride_o_tok + head * stride_o_head + offs_d, out.to(o_ptr.dtype.element_ty), mask=d_ok)


# The Triton interpreter multiplies 16-bit float operands of tl.dot as raw integers (triton
# 3.9); there the operands go in as fp32, which is exact for bf16 x bf16 products.
_INTERPRETED = type(_paged_decode_kernel).__name__ == "InterpretedFunction"
_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def default_num_splits(batch: int, num_kv_heads: int, max_tokens: int, device: torch.device) -> int:
    """Splits per (sequence, KV head) so the grid covers the GPU about twice, from static sizes only."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    wanted = triton.cdiv(2 * sms, max(1, batch * num_kv_heads))
    return max(1, min(wanted, triton.cdiv(max_tokens, _MIN_TOKENS_PER_SPLIT), _MAX_SPLITS))


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float | None = None,
                           num_splits: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q [B, Hq, D] over each row's first seq_lens[b] paged tokens; returns [B, Hq, D]."""
    batch, num_q_heads, head_dim = q.shape
    num_pages, page_size, num_kv_heads, _ = k_cache.shape
    if num_q_heads % num_kv_heads or k_cache.shape != v_cache.shape or k_cache.shape[-1] != head_dim:
        raise ValueError(f"q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)} and v_cache "
                         f"{tuple(v_cache.shape)} disagree on heads or head dim")
    if any(x.stride(-1) != 1 for x in (q, k_cache, v_cache)):
        raise ValueError("q and the caches need a contiguous head dim")
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    if batch == 0:
        return out
    if num_splits is None:
        num_splits = default_num_splits(batch, num_kv_heads, block_tables.shape[1] * page_size, q.device)
    group = num_q_heads // num_kv_heads
    block_d = triton.next_power_of_2(head_dim)
    if num_splits > 1:
        part_o = torch.empty(batch, num_q_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(batch, num_q_heads, num_splits, dtype=torch.float32, device=q.device)
    else:
        part_o = part_lse = out  # unused
    _paged_decode_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, part_o, part_lse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), scale,
        NUM_Q_HEADS=num_q_heads, GROUP=group, PAGE_SIZE=page_size, HEAD_DIM=head_dim, NUM_SPLITS=num_splits,
        BG=max(16, triton.next_power_of_2(group)), BD=block_d, BLOCK_N=_BLOCK_N,
        DOT_DTYPE=tl.float32 if _INTERPRETED or q.dtype == torch.float32 else _TL_DTYPES[q.dtype],
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4, num_stages=2)
    if num_splits > 1:
        _merge_splits_kernel[(batch, num_q_heads)](
            part_o, part_lse, out, out.stride(0), out.stride(1), NUM_Q_HEADS=num_q_heads, HEAD_DIM=head_dim,
            NUM_SPLITS=num_splits, BS=triton.next_power_of_2(num_splits), BD=block_d, num_warps=4)
    return out
