"""Triton paged prefill attention against the torch reference, and the reference against the old model path."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.attention import attention  # noqa: E402
from qwen35.runtime.kernels.paged_attention import gather_pages  # noqa: E402
from qwen35.runtime.kernels.paged_prefill_attention.reference import paged_prefill_attention as reference  # noqa: E402
from qwen35.runtime.kernels.paged_prefill_attention.triton import paged_prefill_attention, query_blocks  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
# (new tokens, tokens cached before): first chunks mixed with chunks that continue a sequence.
CHUNKS = [(1, 0), (17, 0), (15, 9), (33, 40), (1, 16), (65, 3), (17, 5)]


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(chunks, q_heads, kv_heads, page_size, head_dim, dtype, device, seed=0):
    """Packed queries and shuffled pages; everything past a sequence's tokens is NaN or a -1 table entry."""
    gen = torch.Generator().manual_seed(seed)
    totals = [new + cached for new, cached in chunks]
    pages_per_row = max(-(-n // page_size) for n in totals) + 2
    num_pages = sum(-(-n // page_size) for n in totals) + 1
    shape = (num_pages, page_size, kv_heads, head_dim)
    k_pages, v_pages = torch.full(shape, math.nan), torch.full(shape, math.nan)
    tables = torch.full((len(chunks), pages_per_row), num_pages - 1, dtype=torch.int32)
    tables[1::2, -1] = -1  # both kinds of padding entry: a (poisoned) scratch page and -1
    order = torch.randperm(num_pages - 1, generator=gen).tolist()
    for row, total in enumerate(totals):
        for index in range(-(-total // page_size)):
            page = tables[row, index] = order.pop()
            filled = min(page_size, total - index * page_size)
            k_pages[page, :filled] = torch.randn(filled, kv_heads, head_dim, generator=gen)
            v_pages[page, :filled] = torch.randn(filled, kv_heads, head_dim, generator=gen)
    q = torch.randn(sum(new for new, _ in chunks), q_heads, head_dim, generator=gen)
    cu_seqlens = torch.tensor([0] + torch.tensor([new for new, _ in chunks]).cumsum(0).tolist(), dtype=torch.int32)
    cached_lens = torch.tensor([cached for _, cached in chunks], dtype=torch.int32)
    return (q.to(device, dtype), k_pages.to(device, dtype), v_pages.to(device, dtype), tables.to(device),
            cu_seqlens.to(device), cached_lens.to(device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_heads, kv_heads, page_size", [(4, 1, 16), (8, 2, 8), (12, 2, 16), (2, 2, 8)])
def test_matches_reference(q_heads, kv_heads, page_size, dtype, device):
    """Groups of 4, 4, 6 (padded to 8) and 1 query heads per KV head; 16- and 8-token pages."""
    inputs = make(CHUNKS, q_heads, kv_heads, page_size, 32, dtype, device)
    out = torch.full_like(inputs[0], math.nan)  # poisoned: an unwritten row fails
    paged_prefill_attention(*inputs, out=out)
    assert not out.isnan().any()
    assert rel_err(out, reference(*inputs)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_dim_256(dtype, device):
    """Qwen3.5's head dim, with 0.8B's 8 query heads on 2 KV heads; a few tokens only."""
    inputs = make([(3, 0), (2, 21), (1, 7)], 8, 2, 16, 256, dtype, device, seed=1)
    out = torch.full_like(inputs[0], math.nan)
    paged_prefill_attention(*inputs, out=out)
    assert not out.isnan().any()
    assert rel_err(out, reference(*inputs)) < TOLERANCE[dtype]


def test_query_blocks_cover_every_token_once():
    """The program index: each token in exactly one live block; the spare programs are marked -1."""
    lengths, block_t = [1, 15, 17, 33, 4, 16], 16
    cu_seqlens = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    block_seq, block_first = query_blocks(cu_seqlens, sum(lengths), block_t)
    covered = [(s, f + j) for s, f in zip(block_seq.tolist(), block_first.tolist()) if s >= 0
               for j in range(block_t) if f + j < lengths[s]]
    assert sorted(covered) == [(s, j) for s, n in enumerate(lengths) for j in range(n)]
    assert block_seq.shape[0] >= sum(-(-n // block_t) for n in lengths)


def model_path_before(query, key, value, k_pages, v_pages, block_tables, bounds):
    """PagedTextModel._prefill_attention as it was before the kernel: a first chunk attends its packed K/V."""
    out = torch.empty_like(query)
    for i, (start, end, cached) in enumerate(bounds):
        q = query[None, start:end]
        if cached == 0:
            out[start:end] = attention(q, key[None, start:end], value[None, start:end])[0]
            continue
        total = cached + end - start
        table = block_tables[i:i + 1]
        keys, values = gather_pages(k_pages, table, total), gather_pages(v_pages, table, total)
        group = query.shape[1] // keys.shape[2]
        keys, values = keys.repeat_interleave(group, dim=2), values.repeat_interleave(group, dim=2)
        seq_lens = torch.full((1,), total, dtype=torch.long, device=query.device)
        out[start:end] = attention(q, keys, values, seq_lens=seq_lens)[0]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_equals_model_path_before(dtype):
    """The torch kernel set keeps the engine's CPU numerics bit for bit."""
    q, k_pages, v_pages, tables, cu_seqlens, cached_lens = make(CHUNKS, 8, 2, 8, 64, dtype, "cpu", seed=2)
    cu, cached = cu_seqlens.tolist(), cached_lens.tolist()
    bounds = [(cu[i], cu[i + 1], cached[i]) for i in range(len(cached))]
    # The packed new K/V, read back from their pages (where the model writes them before attention).
    key = torch.cat([gather_pages(k_pages, tables[i:i + 1], done + end - start)[0, done:] for i, (start, end, done)
                     in enumerate(bounds)])
    value = torch.cat([gather_pages(v_pages, tables[i:i + 1], done + end - start)[0, done:] for i, (start, end, done)
                       in enumerate(bounds)])
    assert key.shape[0] == q.shape[0]
    before = model_path_before(q, key, value, k_pages, v_pages, tables, bounds)
    assert torch.equal(reference(q, k_pages, v_pages, tables, cu_seqlens, cached_lens), before)
