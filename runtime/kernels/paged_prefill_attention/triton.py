"""Paged prefill attention in Triton: one launch for a packed varlen batch, causal, grouped-query heads.

Semantics and cache layout as in the reference: q [T, Hq, D] packs the new tokens of n
sequences (cu_seqlens [n + 1] int32); query j of sequence i sits at cache position
cached_lens[i] + j and sees keys 0 .. cached_lens[i] + j, all read through block_tables
[n, max_pages] int32 from k_pages, v_pages [num_pages, page_size, Hkv, D] (the new tokens'
K/V are written before the call).

Design (flash attention, forward only):
  - A program owns (query block of one sequence, KV head). Its Q tile is ROWS = 64 rows: BLOCK_T
    consecutive tokens x the GROUP query heads sharing the KV head (GROUP padded to a power of
    two; row r is token r // GROUP_P, head r % GROUP_P). Every K/V tile is thus loaded once for
    the whole group, and short chunks (speculative verify, small prompt tails) still fill the
    MMA's M dimension with heads instead of padding.
  - The program streams keys 0 .. its last token's position, BLOCK_N at a time, each key row
    found through the block table (page t // page_size, row t % page_size), so any page size
    works. Online softmax in fp32 (base 2, scale folded into the exponent), fp32 accumulator.
    The causal mask is applied on every tile (key position <= the row's position); key 0 is in
    the first tile and visible to every row, so the running max is finite from the start.
  - The grid is (programs, Hkv) with programs = cdiv(T, BLOCK_T) + n - 1, an upper bound on
    sum_i cdiv(len_i, BLOCK_T) known without reading the lengths. A few torch ops on the device
    build the (sequence, first token) index of every program (spare programs get sequence -1
    and do nothing), so there is no host sync and no per-sequence Python loop.

Tiles: ROWS = 64; BLOCK_N = 64 for D <= 128, 32 for D = 256; num_warps 4 (8 for D = 256),
num_stages 2. Compiled for sm_90 without a GPU (Triton 3.9, D = 256, groups 4, 6 and 16):
bf16 takes 166-179 registers a thread, no spills, 96 KiB shared memory; fp32 (the exact IEEE
test path) spills. Expected on an H100 (UNMEASURED, no GPU was available when this was written):
for long chunks it should sit well above the per-sequence SDPA loop it replaces (one launch,
no gathered copy of the pages, no repeated KV heads), but below FlashAttention-3 (no TMA/wgmma
pipelining, per-token page gathers, masking on every tile). Likely first wins: skip the mask on
tiles fully below the diagonal, order programs longest-first, load whole pages when
page_size % BLOCK_N == 0, and tune ROWS/BLOCK_N/num_stages per head dim.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_ROWS = 64
_LOG2E = 1.4426950408889634


@triton.jit
def _paged_prefill_kernel(q_ptr, k_ptr, v_ptr, table_ptr, cu_ptr, cached_ptr, block_seq_ptr, block_first_ptr, o_ptr,
                          stride_q_tok, stride_q_head, stride_k_page, stride_k_tok, stride_k_head,
                          stride_v_page, stride_v_tok, stride_v_head, stride_table, stride_o_tok, stride_o_head,
                          qk_scale, GROUP: tl.constexpr, GROUP_P: tl.constexpr, BLOCK_T: tl.constexpr,
                          PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BD: tl.constexpr, BLOCK_N: tl.constexpr,
                          DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    program = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.load(block_seq_ptr + program)
    live = seq >= 0
    seq = tl.maximum(seq, 0)
    first = tl.load(block_first_ptr + program)  # the block's first token, counted within its sequence
    q_begin = tl.load(cu_ptr + seq)
    q_len = tl.where(live, tl.load(cu_ptr + seq + 1) - q_begin, 0)  # a spare program has no rows, no keys
    cached = tl.load(cached_ptr + seq)
    kv_end = tl.where(live, cached + tl.minimum(first + BLOCK_T, q_len), 0)

    offs_r = tl.arange(0, BLOCK_T * GROUP_P)
    token = first + offs_r // GROUP_P
    head = offs_r % GROUP_P
    row_ok = (token < q_len) & (head < GROUP)
    q_pos = cached + tl.minimum(token, q_len - 1)  # rows past the end borrow the last row's keys: no empty rows
    offs_d = tl.arange(0, BD)
    d_ok = offs_d < HEAD_DIM
    q_rows = (q_begin + token).to(tl.int64) * stride_q_tok + (kv_head * GROUP + head) * stride_q_head
    io_ok = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=io_ok, other=0.0).to(DOT_DTYPE)

    m = tl.full([BLOCK_T * GROUP_P], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BLOCK_T * GROUP_P], dtype=tl.float32)
    acc = tl.zeros([BLOCK_T * GROUP_P, BD], dtype=tl.float32)
    table_row = table_ptr + seq.to(tl.int64) * stride_table
    for start in range(0, kv_end, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < kv_end
        page = tl.load(table_row + offs_n // PAGE_SIZE, mask=n_ok, other=0).to(tl.int64)
        slot = (offs_n % PAGE_SIZE).to(tl.int64)
        kv_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + page[:, None] * stride_k_page + slot[:, None] * stride_k_tok
                    + kv_head * stride_k_head + offs_d[None, :], mask=kv_ok, other=0.0)
        scores = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=DOT_PRECISION) * qk_scale
        scores = tl.where(offs_n[None, :] <= q_pos[:, None], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))  # finite: every row sees key 0, in the first tile
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + page[:, None] * stride_v_page + slot[:, None] * stride_v_tok
                    + kv_head * stride_v_head + offs_d[None, :], mask=kv_ok, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision=DOT_PRECISION)
        m = m_new

    out = acc / tl.where(l > 0.0, l, 1.0)[:, None]
    o_rows = (q_begin + token).to(tl.int64) * stride_o_tok + (kv_head * GROUP + head) * stride_o_head
    tl.store(o_ptr + o_rows[:, None] + offs_d[None, :], out.to(o_ptr.dtype.element_ty), mask=io_ok)


# The Triton interpreter multiplies 16-bit float operands of tl.dot as raw integers (triton
# 3.9); there the operands go in as fp32, which is exact for bf16 x bf16 products.
_INTERPRETED = type(_paged_prefill_kernel).__name__ == "InterpretedFunction"
_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def query_blocks(cu_seqlens: torch.Tensor, num_tokens: int, block_t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence, first token within it) of every program, int32; -1 marks the spare programs.

    sum_i cdiv(len_i, block_t) <= cdiv(T, block_t) + n - 1, so that many programs always suffice
    and the grid follows from static sizes, without reading the lengths back to the host.
    """
    num_seqs = cu_seqlens.shape[0] - 1
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    blocks = (lens + block_t - 1) // block_t
    ends = blocks.cumsum(0)
    program = torch.arange(triton.cdiv(num_tokens, block_t) + num_seqs - 1, device=cu_seqlens.device)
    seq = torch.searchsorted(ends, program, right=True)
    first = (program - (ends - blocks)[seq.clamp(max=num_seqs - 1)]) * block_t
    return torch.where(seq < num_seqs, seq, -1).int(), first.int()


def paged_prefill_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                            block_tables: torch.Tensor, cu_seqlens: torch.Tensor, cached_lens: torch.Tensor,
                            scale: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of each packed chunk over its cached tokens and itself; returns [T, Hq, D]."""
    num_tokens, num_q_heads, head_dim = q.shape
    _, page_size, num_kv_heads, _ = k_pages.shape
    if num_q_heads % num_kv_heads or k_pages.shape != v_pages.shape or k_pages.shape[-1] != head_dim:
        raise ValueError(f"q {tuple(q.shape)}, k_pages {tuple(k_pages.shape)} and v_pages "
                         f"{tuple(v_pages.shape)} disagree on heads or head dim")
    if any(x.stride(-1) != 1 for x in (q, k_pages, v_pages, block_tables)):
        raise ValueError("q and the pages need a contiguous head dim, the block tables contiguous rows")
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    if num_tokens == 0:
        return out
    group = num_q_heads // num_kv_heads
    group_p = triton.next_power_of_2(group)
    block_t = max(1, _ROWS // group_p)
    block_seq, block_first = query_blocks(cu_seqlens, num_tokens, block_t)
    block_d = max(16, triton.next_power_of_2(head_dim))
    _paged_prefill_kernel[(block_seq.shape[0], num_kv_heads)](
        q, k_pages, v_pages, block_tables, cu_seqlens, cached_lens, block_seq, block_first, out,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        v_pages.stride(0), v_pages.stride(1), v_pages.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), scale * _LOG2E,
        GROUP=group, GROUP_P=group_p, BLOCK_T=block_t, PAGE_SIZE=page_size, HEAD_DIM=head_dim, BD=block_d,
        BLOCK_N=64 if block_d <= 128 else 32,
        DOT_DTYPE=tl.float32 if _INTERPRETED or q.dtype == torch.float32 else _TL_DTYPES[q.dtype],
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4 if block_d <= 128 else 8, num_stages=2)
    return out
