"""Per-sequence model state for generation: a KV cache on attention layers, conv and recurrent
state on Gated DeltaNet layers, one row per sequence.

Row r of every tensor belongs to one sequence for its whole life. A forward call names the
rows its batch entries use, so prompts of different lengths are prefilled row by row (in
chunks) and then decoded together, each row at its own position. `lengths[r]` (host ints,
the scheduler's view) is how many tokens row r has consumed.

`rope_deltas[r]` (host ints) is how far row r's rotary positions run ahead of its slots once
a prompt with images or videos has been prefilled (mrope.py): tokens after it rotate at
slot + delta. It is 0 for text, and resets whenever a call starts a row at length 0, so a
row reused for a new sequence (lengths[r] = 0) starts plain.

Layout per layer index:
  key/value   [rows, max_len, kv_heads, head_dim]   model dtype (full attention layers)
  conv        [rows, conv_dim, kernel - 1]           model dtype (last inputs, oldest first)
  recurrent   [rows, v_heads, k_head_dim, v_head_dim] fp32 (S in o = S^T q)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen35.planner.models.config import TextConfig


@dataclass
class StepInfo:
    """What every layer needs to know about one forward call over cached rows."""

    rows: torch.Tensor  # [B] int64, cache rows of the batch entries
    positions: torch.Tensor  # [B, T] int64, absolute positions of the new tokens
    seq_lens: torch.Tensor  # [B] int64, tokens in each row once this call is done
    kv_len: int  # max(seq_lens): how much of the KV cache to read
    num_tokens: int  # T
    all_rows: bool  # the batch is every row in order: states need no gather/scatter
    rope_positions: torch.Tensor | None = None  # [B, T] rotary positions where some row's delta is set, else None


class ModelCache:
    """Preallocated per-row state for every layer of one text model."""

    def __init__(self, text: TextConfig, num_rows: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.num_rows = num_rows
        self.max_len = max_len
        self.device = torch.device(device)
        self.lengths = [0] * num_rows
        self.rope_deltas = [0] * num_rows
        self.key: dict[int, torch.Tensor] = {}
        self.value: dict[int, torch.Tensor] = {}
        self.conv: dict[int, torch.Tensor] = {}
        self.recurrent: dict[int, torch.Tensor] = {}
        kv_shape = (num_rows, max_len, text.num_key_value_heads, text.head_dim)
        for i in text.full_attention_layer_ids:
            self.key[i] = torch.zeros(kv_shape, dtype=dtype, device=self.device)
            self.value[i] = torch.zeros(kv_shape, dtype=dtype, device=self.device)
        key_dim = text.linear_num_key_heads * text.linear_key_head_dim
        conv_dim = 2 * key_dim + text.linear_num_value_heads * text.linear_value_head_dim
        state_shape = (num_rows, text.linear_num_value_heads, text.linear_key_head_dim,
                       text.linear_value_head_dim)
        for i in text.linear_attention_layer_ids:
            self.conv[i] = torch.zeros(num_rows, conv_dim, text.linear_conv_kernel_dim - 1,
                                       dtype=dtype, device=self.device)
            self.recurrent[i] = torch.zeros(state_shape, dtype=torch.float32, device=self.device)

    def begin(self, rows: list[int] | None, num_tokens: int) -> StepInfo:
        """Describe a call that appends num_tokens to each of `rows` (None: all rows)."""
        all_rows = rows is None or list(rows) == list(range(self.num_rows))
        rows = list(range(self.num_rows)) if rows is None else list(rows)
        starts = [self.lengths[r] for r in rows]
        ends = [s + num_tokens for s in starts]
        if max(ends) > self.max_len:
            raise ValueError(f"cache holds {self.max_len} tokens per row; this call needs {max(ends)}")
        for r, start in zip(rows, starts):
            if start == 0:
                self.rope_deltas[r] = 0
        start_t = torch.tensor(starts, dtype=torch.long, device=self.device)
        positions = start_t[:, None] + torch.arange(num_tokens, device=self.device)
        deltas = [self.rope_deltas[r] for r in rows]
        rope_positions = None
        if any(deltas):
            rope_positions = positions + torch.tensor(deltas, dtype=torch.long, device=self.device)[:, None]
        return StepInfo(
            rows=torch.tensor(rows, dtype=torch.long, device=self.device),
            positions=positions,
            seq_lens=start_t + num_tokens,
            kv_len=max(ends),
            num_tokens=num_tokens,
            all_rows=all_rows,
            rope_positions=rope_positions,
        )

    def commit(self, step: StepInfo) -> None:
        """Record that the call described by `step` has written its tokens."""
        for r in step.rows.tolist():
            self.lengths[r] += step.num_tokens

    def read_state(self, store: dict[int, torch.Tensor], layer: int, step: StepInfo) -> torch.Tensor:
        """The rows' slice of a per-row state tensor (a view when the batch is every row)."""
        return store[layer] if step.all_rows else store[layer].index_select(0, step.rows)

    def write_state(self, store: dict[int, torch.Tensor], layer: int, step: StepInfo,
                    value: torch.Tensor) -> None:
        """Store new per-row state for the batch's rows."""
        if step.all_rows:
            store[layer].copy_(value)
        else:
            store[layer].index_copy_(0, step.rows, value.to(store[layer].dtype))

    def append_kv(self, layer: int, step: StepInfo, key: torch.Tensor,
                  value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new k, v [B, T, Hkv, D] at each row's positions; return the rows' caches."""
        rows = step.rows[:, None].expand_as(step.positions)
        self.key[layer][rows, step.positions] = key.to(self.key[layer].dtype)
        self.value[layer][rows, step.positions] = value.to(self.value[layer].dtype)
        if step.all_rows:
            return self.key[layer][:, :step.kv_len], self.value[layer][:, :step.kv_len]
        return (self.key[layer][:, :step.kv_len].index_select(0, step.rows),
                self.value[layer][:, :step.kv_len].index_select(0, step.rows))
