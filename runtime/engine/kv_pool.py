"""Paged KV cache for the full-attention layers: pages, block tables, allocation and free.

`BlockManager` is plain bookkeeping (no torch): a pool of `num_pages` pages of `page_size`
tokens, and per cache row the list of pages that hold its tokens in order (its block table).
Token t of a row lives in page table[t // page_size] at offset t % page_size; its flat slot
in a layer's [pages * page_size, heads, dim] view is page * page_size + offset.

`KVPool` is the torch storage: per full-attention layer one key and one value tensor
[num_pages + 1, page_size, kv_heads, head_dim]. The extra last page is scratch: padding
entries of a CUDA-graph batch write their K/V there and read it back, so no real page is
ever touched by a batch slot that holds no sequence. It is never handed out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the block manager stays importable without torch
    import torch


class PoolExhausted(RuntimeError):
    """The pool has no free page (or state slot) for a request."""


def pages_for(num_tokens: int, page_size: int) -> int:
    """Pages needed to hold num_tokens tokens."""
    return -(-num_tokens // page_size)


class BlockManager:
    """Page allocation and per-row block tables over a fixed pool of pages."""

    def __init__(self, num_pages: int, page_size: int, num_rows: int, max_len: int):
        if num_pages < 1 or page_size < 1 or num_rows < 1 or max_len < 1:
            raise ValueError(f"a KV pool needs positive sizes, got {num_pages} pages of {page_size} tokens, "
                             f"{num_rows} rows of {max_len} tokens")
        self.num_pages = num_pages
        self.page_size = page_size
        self.num_rows = num_rows
        self.max_len = max_len
        self.max_pages_per_row = pages_for(max_len, page_size)
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out page 0 first
        self.tables: list[list[int]] = [[] for _ in range(num_rows)]
        self.lengths = [0] * num_rows  # tokens written to each row

    @property
    def num_free_pages(self) -> int:
        """Pages not held by any row."""
        return len(self._free)

    @property
    def scratch_page(self) -> int:
        """The page padding entries use (one past the real pages)."""
        return self.num_pages

    def can_grow(self, row: int, num_tokens: int) -> bool:
        """Whether row can take num_tokens more tokens now."""
        end = self.lengths[row] + num_tokens
        needed = pages_for(end, self.page_size) - len(self.tables[row])
        return end <= self.max_len and needed <= len(self._free)

    def grow(self, row: int, num_tokens: int) -> list[tuple[int, int]]:
        """Reserve room for num_tokens more tokens of row; returns the new (table index, page) pairs."""
        end = self.lengths[row] + num_tokens
        if end > self.max_len:
            raise ValueError(f"row {row} would hold {end} tokens; rows hold at most {self.max_len}")
        table = self.tables[row]
        needed = pages_for(end, self.page_size) - len(table)
        if needed > len(self._free):
            raise PoolExhausted(f"the KV pool has {len(self._free)} free pages of {self.page_size} tokens; "
                                f"row {row} needs {needed} more")
        added = []
        for _ in range(needed):
            page = self._free.pop()
            added.append((len(table), page))
            table.append(page)
        self.lengths[row] = end
        return added

    def free(self, row: int) -> None:
        """Return every page of row to the pool and empty it."""
        self._free.extend(reversed(self.tables[row]))
        self.tables[row] = []
        self.lengths[row] = 0

    def truncate(self, row: int, length: int) -> None:
        """Keep the row's first length tokens; pages past them go back to the pool (speculation's rollback)."""
        if not 0 <= length <= self.lengths[row]:
            raise ValueError(f"row {row} holds {self.lengths[row]} tokens; cannot keep {length}")
        table = self.tables[row]
        keep = pages_for(length, self.page_size)
        self._free.extend(reversed(table[keep:]))  # the first dropped page is handed out again first
        del table[keep:]
        self.lengths[row] = length

    def slot(self, row: int, position: int) -> int:
        """Flat cache slot of the row's token at position (its page must be reserved)."""
        return self.tables[row][position // self.page_size] * self.page_size + position % self.page_size

    def slots(self, row: int, start: int, end: int) -> list[int]:
        """Flat cache slots of the row's tokens start..end-1."""
        table, size = self.tables[row], self.page_size
        return [table[p // size] * size + p % size for p in range(start, end)]


class KVPool:
    """Key and value pages of every full-attention layer, plus the scratch page."""

    def __init__(self, layer_ids: tuple[int, ...], num_pages: int, page_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device):
        import torch

        shape = (num_pages + 1, page_size, num_kv_heads, head_dim)
        self.page_size = page_size
        self.num_pages = num_pages
        self.key = {i: torch.zeros(shape, dtype=dtype, device=device) for i in layer_ids}
        self.value = {i: torch.zeros(shape, dtype=dtype, device=device) for i in layer_ids}

    @property
    def nbytes(self) -> int:
        """Bytes the pages take on the device (scratch page included)."""
        return sum(t.numel() * t.element_size() for store in (self.key, self.value) for t in store.values())

    def flat(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's key and value pages as [slots, kv_heads, head_dim] views."""
        key, value = self.key[layer], self.value[layer]
        return key.view(-1, *key.shape[2:]), value.view(-1, *value.shape[2:])
