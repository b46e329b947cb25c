"""Paged prefill attention in plain torch: per sequence, gather its pages, then causal SDPA.

Shapes: q [T, Hq, D], the new tokens of n sequences packed back to back; sequence i's queries
are q[cu_seqlens[i]:cu_seqlens[i + 1]], at cache positions cached_lens[i] + j. Cache layout as
in paged_attention: k_pages, v_pages [num_pages, page_size, Hkv, D], token t of sequence i in
page block_tables[i, t // page_size] at row t % page_size. The new tokens' K/V are already in
their pages, so query j of sequence i sees keys 0 .. cached_lens[i] + j, all read from the
pages. Table entries past a sequence's tokens may be anything (-1, a scratch page); they are
never read. SDPA accumulates in fp32 for every dtype.
"""
from __future__ import annotations

import torch

from qwen35.runtime.kernels.attention.reference import attention
from qwen35.runtime.kernels.paged_attention.reference import gather_pages


def paged_prefill_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                            block_tables: torch.Tensor, cu_seqlens: torch.Tensor, cached_lens: torch.Tensor,
                            scale: float | None = None) -> torch.Tensor:
    """Causal attention of each packed chunk over its cached tokens and itself; returns [T, Hq, D]."""
    out = torch.empty_like(q)
    bounds, cached = cu_seqlens.tolist(), cached_lens.tolist()
    group = q.shape[1] // k_pages.shape[2]
    for i, done in enumerate(cached):
        start, end = bounds[i], bounds[i + 1]
        if start == end:
            continue
        total = done + end - start
        table = block_tables[i:i + 1]
        keys, values = gather_pages(k_pages, table, total), gather_pages(v_pages, table, total)
        chunk = q[None, start:end]
        if done == 0:  # a first chunk sees only itself: the plain causal (flash) path
            out[start:end] = attention(chunk, keys, values, scale=scale)[0]
            continue
        # With a mask, SDPA's fused (memory-efficient) kernel needs as many KV heads as query heads;
        # grouped heads would drop it to the math path, which materialises the score matrix.
        keys, values = keys.repeat_interleave(group, dim=2), values.repeat_interleave(group, dim=2)
        seq_lens = torch.full((1,), total, dtype=torch.long, device=q.device)
        out[start:end] = attention(chunk, keys, values, seq_lens=seq_lens, scale=scale)[0]
    return out
