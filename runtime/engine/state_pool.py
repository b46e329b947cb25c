"""A fixed pool of linear-attention state slots: conv and recurrent state per Gated DeltaNet layer.

`SlotAllocator` is plain bookkeeping (no torch): slot ids 0..num_slots-1, handed out lowest
first and taken back when a sequence ends. `StatePool` is the torch storage, per GDN layer:

  conv       [num_slots, conv_dim, kernel - 1]          model dtype (last inputs, oldest first)
  recurrent  [num_slots, v_heads, k_head_dim, v_head_dim] fp32 (S in o = S^T q)

the layouts the causal_conv1d and gated_delta_rule kernels read through a slot index. A slot
id of -1 is padding: kernels neither read nor write the pool for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from qwen35.runtime.engine.kv_pool import PoolExhausted

if TYPE_CHECKING:  # the allocator stays importable without torch
    import torch

    from qwen35.planner.models.config import TextConfig

PADDING_SLOT = -1


class SlotAllocator:
    """Free list of state slot ids."""

    def __init__(self, num_slots: int):
        if num_slots < 1:
            raise ValueError(f"a state pool needs at least one slot, got {num_slots}")
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first
        self._held: set[int] = set()

    @property
    def num_free(self) -> int:
        """Slots not held by a sequence."""
        return len(self._free)

    def allocate(self) -> int:
        """A free slot id (PoolExhausted when none is left)."""
        if not self._free:
            raise PoolExhausted(f"all {self.num_slots} linear-attention state slots are in use")
        slot = self._free.pop()
        self._held.add(slot)
        return slot

    def free(self, slot: int) -> None:
        """Give a slot back; freeing a slot that is not held is an error."""
        if slot not in self._held:
            raise ValueError(f"state slot {slot} is not allocated")
        self._held.remove(slot)
        self._free.append(slot)


class StatePool:
    """Conv and recurrent state of every Gated DeltaNet layer for num_slots sequences."""

    def __init__(self, text: TextConfig, num_slots: int, dtype: torch.dtype, device: torch.device):
        import torch

        key_dim = text.linear_num_key_heads * text.linear_key_head_dim
        conv_dim = 2 * key_dim + text.linear_num_value_heads * text.linear_value_head_dim
        conv_shape = (num_slots, conv_dim, text.linear_conv_kernel_dim - 1)
        state_shape = (num_slots, text.linear_num_value_heads, text.linear_key_head_dim,
                       text.linear_value_head_dim)
        self.num_slots = num_slots
        self.conv = {i: torch.zeros(conv_shape, dtype=dtype, device=device) for i in text.linear_attention_layer_ids}
        self.recurrent = {i: torch.zeros(state_shape, dtype=torch.float32, device=device)
                          for i in text.linear_attention_layer_ids}

    @property
    def nbytes(self) -> int:
        """Bytes the pool takes on the device."""
        return sum(t.numel() * t.element_size() for store in (self.conv, self.recurrent) for t in store.values())

    def clear(self, slot: int) -> None:
        """Zero one slot's state in every layer (a new sequence starts from zero state)."""
        for store in (self.conv, self.recurrent):
            for tensor in store.values():
                tensor[slot].zero_()
