"""One forward call over the paged cache, described explicitly: what every layer reads to pick its op.

Three modes, one tensor layout (tokens packed back to back, [N, ...]):
  PREFILL  prompt chunks of n sequences, split by cu_seqlens; each continues its cached tokens
  DECODE   one new token per sequence (CUDA-graph safe: every field is a device tensor of the
           batch's padded size)
  VERIFY   speculation: T = k + 1 tokens per sequence ([last token, k drafts]); the Gated DeltaNet
           layers read their state but do not write it, and leave their inputs in `deferred` for
           the commit of the accepted prefix
Padding entries carry state slot -1 and write their K/V into the scratch page.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch


class Mode(Enum):
    """Which ops a forward runs."""

    PREFILL = "prefill"
    DECODE = "decode"
    VERIFY = "verify"


@dataclass
class DeferredState:
    """A GDN layer's verify inputs: enough for the commit to advance its state by any prefix."""

    window: torch.Tensor  # [B, conv_dim, K-1+T]: the rows' conv state, then the T new conv inputs
    query: torch.Tensor  # [B, T, Hk, Dk]
    key: torch.Tensor  # [B, T, Hk, Dk]
    value: torch.Tensor  # [B, T, Hv, Dv]
    a: torch.Tensor  # [B, T, Hv] raw in_proj_a output (the commit kernel computes the gates)
    b: torch.Tensor  # [B, T, Hv] raw in_proj_b output


@dataclass
class ForwardBatch:
    """The inputs of one forward: tokens, positions and where each sequence's cache lives."""

    mode: Mode
    token_ids: torch.Tensor  # [N] int64
    positions: torch.Tensor  # [N] int64 rotary positions, or [3, N] (M-RoPE) when a sequence brings media
    state_slots: torch.Tensor  # [n] int32, -1 for padding
    kv_slots: torch.Tensor  # [N] int64, flat KV slot of every new token
    block_tables: torch.Tensor  # [n, max_pages] int32
    seq_lens: torch.Tensor | None = None  # decode: [n] int32, tokens cached once the new one is written
    cu_seqlens: torch.Tensor | None = None  # prefill/verify: [n + 1] int32, offsets in the pack
    cached_lens: torch.Tensor | None = None  # prefill/verify: [n] int32, tokens cached before this call
    dense_attention: bool = False  # a lone first chunk: attention over its own K/V (no page walk)
    embed_index: torch.Tensor | None = None  # [M] int64, pack offsets of the image and video pad tokens
    embeds: torch.Tensor | None = None  # [M, H], the vision embeddings that replace theirs
    deferred: dict[int, DeferredState] = field(default_factory=dict)  # verify: filled by the GDN layers

    @property
    def num_sequences(self) -> int:
        """n, the sequences (rows) in the batch."""
        return self.state_slots.shape[0]


def kv_slots_of(block_tables: torch.Tensor, sequence: torch.Tensor, positions: torch.Tensor,
                page_size: int) -> torch.Tensor:
    """Flat KV slot [N] of each token: its sequence's page for the position, times page_size, plus the offset."""
    pages = block_tables[sequence, positions // page_size].long()
    return pages * page_size + positions % page_size


def packed_batch(mode: Mode, token_ids: torch.Tensor, lengths: list[int], cached: list[int],
                 state_slots: torch.Tensor, block_tables: torch.Tensor, page_size: int,
                 positions: torch.Tensor | None = None) -> ForwardBatch:
    """A PREFILL or VERIFY batch: lengths[i] new tokens of sequence i after its cached[i] tokens.

    Cache positions, KV slots and (unless given) the rotary positions are derived on the device
    from the host lengths. `positions` overrides the rotary positions ([N] or [3, N]).
    """
    device = token_ids.device
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    cu_seqlens = torch.tensor(offsets, dtype=torch.int32, device=device)
    cached_lens = torch.tensor(cached, dtype=torch.int32, device=device)
    counts = torch.tensor(lengths, dtype=torch.long, device=device)
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=device), counts, output_size=offsets[-1])
    cache_positions = cached_lens.long()[sequence] + torch.arange(offsets[-1], device=device) \
        - cu_seqlens.long()[sequence]
    return ForwardBatch(
        mode=mode, token_ids=token_ids,
        positions=cache_positions if positions is None else positions,
        state_slots=state_slots, kv_slots=kv_slots_of(block_tables, sequence, cache_positions, page_size),
        block_tables=block_tables, cu_seqlens=cu_seqlens, cached_lens=cached_lens,
        dense_attention=mode is Mode.PREFILL and len(lengths) == 1 and cached[0] == 0)


def decode_batch(token_ids: torch.Tensor, cache_positions: torch.Tensor, rotary_positions: torch.Tensor,
                 state_slots: torch.Tensor, block_tables: torch.Tensor, page_size: int) -> ForwardBatch:
    """A DECODE batch of one token per sequence, everything derived on the device (graph-safe)."""
    sequence = torch.arange(token_ids.shape[0], device=token_ids.device)
    return ForwardBatch(
        mode=Mode.DECODE, token_ids=token_ids, positions=rotary_positions, state_slots=state_slots,
        kv_slots=kv_slots_of(block_tables, sequence, cache_positions, page_size), block_tables=block_tables,
        seq_lens=(cache_positions + 1).to(torch.int32))
