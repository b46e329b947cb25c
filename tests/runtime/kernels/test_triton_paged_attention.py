"""Triton paged decode attention against SDPA over the gathered pages (the reference)."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.paged_attention.reference import paged_decode_attention as reference  # noqa: E402
from qwen35.runtime.kernels.paged_attention.triton import paged_decode_attention  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(lengths, q_heads, kv_heads, page_size, dtype, device, head_dim=256, seed=0):
    """Caches with shuffled pages; table entries past a row's length point at a poisoned page."""
    gen = torch.Generator().manual_seed(seed)
    pages_per_row = max(-(-n // page_size) for n in lengths) + 1
    num_pages = len(lengths) * pages_per_row + 1
    cache = (num_pages, page_size, kv_heads, head_dim)
    k_cache, v_cache = torch.randn(cache, generator=gen), torch.randn(cache, generator=gen)
    k_cache[-1] = v_cache[-1] = math.nan  # never read: lies past every row's length
    tables = torch.full((len(lengths), pages_per_row), num_pages - 1, dtype=torch.int32)
    order = torch.randperm(num_pages - 1, generator=gen)
    for row, n in enumerate(lengths):
        used = -(-n // page_size)
        tables[row, :used] = order[row * pages_per_row:row * pages_per_row + used].int()
    q = torch.randn(len(lengths), q_heads, head_dim, generator=gen)
    lens = torch.tensor(lengths, dtype=torch.int32)
    return (q.to(device, dtype), k_cache.to(device, dtype), v_cache.to(device, dtype), tables.to(device),
            lens.to(device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_matches_sdpa_over_gathered_pages(dtype, num_splits, device):
    lengths = [1, 63, 0, 130, 17]  # 0: a padding row
    q, k_cache, v_cache, tables, lens = make(lengths, 8, 2, 16, dtype, device)
    out = torch.full_like(q, math.nan)
    paged_decode_attention(q, k_cache, v_cache, tables, lens, num_splits=num_splits, out=out)
    assert not out.isnan().any()
    clean = (torch.nan_to_num(k_cache), torch.nan_to_num(v_cache))  # SDPA masks by -inf, 0 * NaN is NaN
    assert rel_err(out, reference(q, *clean, tables, lens)) < TOLERANCE[dtype]
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def test_odd_group_and_page_size(device):
    """Six query heads per KV head (27B) and 5-token pages; default split count."""
    q, k_cache, v_cache, tables, lens = make([33, 9, 70], 12, 2, 5, torch.float32, device, head_dim=64, seed=1)
    out = paged_decode_attention(q, k_cache, v_cache, tables, lens)
    clean = (torch.nan_to_num(k_cache), torch.nan_to_num(v_cache))
    assert rel_err(out, reference(q, *clean, tables, lens)) < 1e-5
