"""Causal softmax attention over a KV cache in plain torch (SDPA), with grouped-query heads.

Shapes: q [B, Tq, Hq, D]; k, v [B, Tk, Hkv, D] with Hq a multiple of Hkv; out [B, Tq, Hq, D].
`seq_lens[b]` is how many cache positions of row b are valid once the Tq new tokens are in
it: the new tokens sit at positions seq_lens[b]-Tq .. seq_lens[b]-1 and query t sees keys
0 .. seq_lens[b]-Tq+t. That one rule covers a full forward (seq_lens = Tq), a chunk of a
chunked prefill (seq_lens = offset + Tq) and a batched decode of rows of different lengths
(Tq = 1). Without seq_lens every row holds Tk valid positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_mask(seq_lens: torch.Tensor, num_queries: int, num_keys: int) -> torch.Tensor:
    """Boolean [B, 1, Tq, Tk] mask, True where query t of row b may attend key j."""
    device = seq_lens.device
    query_pos = seq_lens[:, None] - num_queries + torch.arange(num_queries, device=device)  # [B, Tq]
    key_pos = torch.arange(num_keys, device=device)
    return (key_pos[None, None, :] <= query_pos[:, :, None])[:, None]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_lens: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention of q over the cached k, v; see the module docstring for seq_lens."""
    batch, num_queries, num_heads, head_dim = q.shape
    num_keys, num_kv_heads = k.shape[1], k.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of kv heads ({num_kv_heads})")
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    gqa = num_heads != num_kv_heads
    if seq_lens is None and num_keys == num_queries:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        if seq_lens is None:
            seq_lens = torch.full((batch,), num_keys, dtype=torch.long, device=q.device)
        mask = attention_mask(seq_lens.to(q.device), num_queries, num_keys)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)
