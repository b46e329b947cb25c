"""KV page allocation: which pages of the pool each sequence holds (plain bookkeeping, no torch).

A sequence gets every page it can ever fill (prompt + max_tokens, plus speculation's room) when it
is admitted, and gives them back when it ends, so a running sequence never finds the pool empty
and nothing is preempted. The price: a request that asks for the whole context holds that many
pages even when it stops early. The storage itself is the model's (runtime/model/cache.py).
"""
from __future__ import annotations


class PoolExhausted(RuntimeError):
    """The pool has no room (pages or state slots) for a request."""


def pages_for(num_tokens: int, page_size: int) -> int:
    """Pages needed to hold num_tokens tokens."""
    return -(-num_tokens // page_size)


class BlockManager:
    """A free list over a fixed pool of num_pages pages of page_size tokens."""

    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 1 or page_size < 1:
            raise ValueError(f"a KV pool needs positive sizes, got {num_pages} pages of {page_size} tokens")
        self.num_pages = num_pages
        self.page_size = page_size
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out page 0 first

    @property
    def num_free_pages(self) -> int:
        """Pages held by no sequence."""
        return len(self._free)

    def allocate(self, num_tokens: int) -> list[int]:
        """The pages (a block table) for num_tokens tokens."""
        needed = pages_for(num_tokens, self.page_size)
        if needed > len(self._free):
            raise PoolExhausted(f"the KV pool has {len(self._free)} free pages of {self.page_size} tokens; "
                                f"{num_tokens} tokens need {needed}")
        return [self._free.pop() for _ in range(needed)]

    def free(self, pages: list[int]) -> None:
        """Give a block table's pages back (the first page is handed out again first)."""
        self._free.extend(reversed(pages))
