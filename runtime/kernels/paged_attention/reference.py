"""Paged decode attention in plain torch: gather each sequence's pages, then SDPA.

Cache layout: k_cache, v_cache [num_pages, page_size, Hkv, D]; sequence b's token t lives in
page block_tables[b, t // page_size] at offset t % page_size. seq_lens[b] counts the cached
tokens, the new one included (it is written before attention runs), so the single query of
row b sees keys 0 .. seq_lens[b] - 1. A row with seq_lens[b] == 0 is padding: its output is 0.
"""
from __future__ import annotations

import torch

from qwen35.runtime.kernels.attention.reference import attention


def gather_pages(cache: torch.Tensor, block_tables: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[B, num_tokens, Hkv, D]: the first num_tokens positions of every row's pages, in order."""
    page_size = cache.shape[1]
    positions = torch.arange(num_tokens, device=cache.device)
    pages = block_tables[:, positions // page_size].long().clamp(min=0)  # unused entries may be -1
    return cache[pages, (positions % page_size)[None, :]]


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           scale: float | None = None) -> torch.Tensor:
    """Attention of q [B, Hq, D] over each row's first seq_lens[b] cached tokens; returns [B, Hq, D]."""
    num_tokens = max(int(seq_lens.max()), 1) if seq_lens.numel() else 1
    keys = gather_pages(k_cache, block_tables, num_tokens)
    values = gather_pages(v_cache, block_tables, num_tokens)
    lens = seq_lens.long().clamp(min=1)  # padding rows attend one junk key, zeroed below
    out = attention(q[:, None], keys, values, seq_lens=lens, scale=scale)[:, 0]
    return torch.where((seq_lens > 0)[:, None, None], out, torch.zeros_like(out))
