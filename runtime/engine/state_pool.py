"""Linear-attention state slot allocation (plain bookkeeping, no torch).

Slot ids 0..num_slots-1 index the Gated DeltaNet state pools (runtime/model/cache.py); a running
sequence holds one from admission to its end, and its slot doubles as its row in every per-slot
table (block tables on the device, token history). -1 marks padding in a batch.
"""
from __future__ import annotations

from qwen35.runtime.engine.kv_pool import PoolExhausted

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
