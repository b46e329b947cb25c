"""Attention over a KV cache against a naive softmax loop."""
import math

import torch

from qwen35.runtime.kernels.attention import attention


def naive_attention(q, k, v, seq_lens):
    batch, num_q, num_heads, dim = q.shape
    group = num_heads // k.shape[2]
    out = torch.full(q.shape, float("nan"), dtype=torch.float64)
    for b in range(batch):
        for t in range(num_q):
            visible = seq_lens[b] - num_q + t + 1
            for h in range(num_heads):
                keys = k[b, :visible, h // group].double()
                scores = keys @ q[b, t, h].double() / math.sqrt(dim)
                out[b, t, h] = torch.softmax(scores, 0) @ v[b, :visible, h // group].double()
    return out


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def random_qkv(batch, num_q, num_k, heads, kv_heads, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, num_q, heads, dim, generator=gen),
            torch.randn(batch, num_k, kv_heads, dim, generator=gen),
            torch.randn(batch, num_k, kv_heads, dim, generator=gen))


def test_full_causal_gqa():
    q, k, v = random_qkv(3, 63, 63, 4, 2, 16, 0)
    out = attention(q, k, v)
    assert out.shape == q.shape and not out.isnan().any()
    assert rel_err(out, naive_attention(q, k, v, [63, 63, 63])) < 1e-5


def test_chunk_with_offset_over_longer_cache():
    # A 7-token chunk at offset 20 of a cache with room for 40 (positions 27.. are garbage).
    q, k, v = random_qkv(1, 7, 40, 4, 1, 8, 1)
    k[:, 27:] = 1e4  # stale cache contents must not leak in
    v[:, 27:] = 1e4  # stale cache contents must not leak in
    out = attention(q, k, v, seq_lens=torch.tensor([27]))
    assert not out.isnan().any()
    assert rel_err(out, naive_attention(q, k, v, [27])) < 1e-5


def test_batched_decode_rows_of_different_lengths():
    q, k, v = random_qkv(5, 1, 33, 4, 2, 16, 2)
    lens = [1, 33, 17, 8, 2]
    for b, n in enumerate(lens):
        k[b, n:] = 1e4  # stale cache contents must not leak in
        v[b, n:] = 1e4  # stale cache contents must not leak in
    out = attention(q, k, v, seq_lens=torch.tensor(lens))
    assert not out.isnan().any()
    assert rel_err(out, naive_attention(q, k, v, lens)) < 1e-5
