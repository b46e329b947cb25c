"""Prefix caching over the page pool: full KV pages keyed by their content, and state checkpoints.

On a hybrid model KV pages alone cannot resume a prompt: the Gated DeltaNet layers need their
conv and recurrent state at the point where the reused prefix ends. So a prefix is reusable up
to a page boundary that has a *checkpoint*, a copy of the state taken right after the prefill
chunk that ended there. Where checkpoints are taken: at the last page boundary before a
prompt's final token (the scheduler ends a chunk there), one per prompt, so a repeated prompt,
the choices of an `n > 1` request and the next turn of a chat (whose prompt holds this turn's)
resume there and prefill only the rest.

Keys: page i of a prompt is keyed by hash(key of page i-1, its tokens), the chain seeded with a
digest of the prompt's images and videos (their pad tokens are alike, their pixels are not);
every entry keeps its tokens, so a hash collision is a miss, never a wrong reuse.

Books (plain, no torch): a cached page is referenced by every sequence whose block table holds
it; at zero references it stays cached but evictable, least recently used first (a lookup
touches a chain leaf to root, so a chain is evicted from its leaf). Checkpoints live in their own
slots of the state pool (ids from `first_checkpoint_slot` on) and are evicted least recently
used when a new one needs a slot; an evicted page takes its checkpoint with it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from qwen35.runtime.engine.kv_pool import BlockManager, PoolExhausted, pages_for


def media_seed(chunks: list[bytes]) -> int:
    """The chain seed of a prompt with media: a digest of the media's pixel bytes."""
    digest = hashlib.blake2b(digest_size=8)
    for chunk in chunks:
        digest.update(chunk)
    return int.from_bytes(digest.digest(), "little")


def page_keys(token_ids: list[int], num_pages: int, page_size: int, seed: int = 0) -> list[int]:
    """The chain keys of the first num_pages full pages of token_ids."""
    keys, key = [], seed
    for i in range(num_pages):
        key = hash((key, tuple(token_ids[i * page_size:(i + 1) * page_size])))
        keys.append(key)
    return keys


@dataclass
class CachedPage:
    """One full page of cached KV: its content and, when a prefix may resume right after it, its checkpoint."""

    page: int
    tokens: tuple[int, ...]
    checkpoint: int | None = None  # state slot holding the state after this page's last token


@dataclass
class PrefixHit:
    """The longest reusable prefix of a prompt: its pages (referenced for the caller) and checkpoint slot."""

    num_tokens: int = 0
    pages: tuple[int, ...] = ()
    checkpoint: int | None = None


class PrefixCache:
    """Content-keyed, reference-counted pages over a BlockManager, plus the checkpoint slots."""

    def __init__(self, blocks: BlockManager, first_checkpoint_slot: int, num_checkpoints: int):
        self.blocks = blocks
        self.page_size = blocks.page_size
        self.num_checkpoints = num_checkpoints
        self._free_checkpoints = list(range(first_checkpoint_slot + num_checkpoints - 1, first_checkpoint_slot - 1, -1))
        self._entries: dict[int, CachedPage] = {}  # key -> page
        self._key_of: dict[int, int] = {}  # cached page -> key
        self._refs: dict[int, int] = {}  # cached page -> sequences holding it
        self._evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced keys, least recent first
        self._checkpoints: OrderedDict[int, None] = OrderedDict()  # keys holding a checkpoint, least recent first

    @property
    def num_available_pages(self) -> int:
        """Pages an allocation can get: free ones and unreferenced cached ones."""
        return self.blocks.num_free_pages + len(self._evictable)

    @property
    def num_cached_pages(self) -> int:
        """Pages holding cached content (referenced or not)."""
        return len(self._entries)

    def match(self, token_ids: list[int], keys: list[int]) -> PrefixHit:
        """The longest prefix of pages, all cached, that ends in a checkpoint; its pages are referenced."""
        best = 0
        for i, key in enumerate(keys):
            entry = self._entries.get(key)
            if entry is None or entry.tokens != tuple(token_ids[i * self.page_size:(i + 1) * self.page_size]):
                break
            if entry.checkpoint is not None:
                best = i + 1
        if not best:
            return PrefixHit()
        entries = [self._entries[key] for key in keys[:best]]
        for key, entry in zip(reversed(keys[:best]), reversed(entries)):  # leaf first: the root is touched last
            self._reference(key, entry.page)
        self._checkpoints.move_to_end(keys[best - 1])
        return PrefixHit(best * self.page_size, tuple(entry.page for entry in entries), entries[-1].checkpoint)

    def allocate(self, num_tokens: int) -> list[int]:
        """Fresh pages for num_tokens tokens, evicting unreferenced cached pages as needed."""
        needed = pages_for(num_tokens, self.page_size)
        if needed > self.num_available_pages:
            raise PoolExhausted(f"the KV pool has {self.num_available_pages} available pages of {self.page_size} "
                                f"tokens; {num_tokens} tokens need {needed}")
        while self.blocks.num_free_pages < needed:
            self._evict(next(iter(self._evictable)))
        return self.blocks.allocate(num_tokens)

    def release(self, pages: list[int]) -> None:
        """A sequence lets go of its block table: cached pages lose a reference, the others are freed."""
        private = []
        for page in reversed(pages):  # leaf first into the LRU order, so the root is evicted last
            key = self._key_of.get(page)
            if key is None:
                private.append(page)
                continue
            self._refs[page] -= 1
            if not self._refs[page]:
                self._evictable[key] = None
        self.blocks.free(private[::-1])

    def new_checkpoint(self) -> int | None:
        """A slot for a checkpoint about to be taken (the least recently used one is dropped); None if there are none."""
        if not self._free_checkpoints:
            if not self._checkpoints:  # none at all, or every one is being taken this step
                return None
            self._drop_checkpoint(next(iter(self._checkpoints)))
        return self._free_checkpoints.pop()

    def discard_checkpoint(self, slot: int) -> None:
        """A checkpoint slot that was never published (its step failed) goes back."""
        self._free_checkpoints.append(slot)

    def publish(self, token_ids: list[int], keys: list[int], pages: list[int], checkpoint: int) -> None:
        """The sequence holding `pages` has the state after len(keys) full pages in `checkpoint`: cache both.

        Pages whose content is cached already (under another page) stay the sequence's own.
        """
        for i, (key, page) in enumerate(zip(keys, pages)):
            if key in self._entries or page in self._key_of:
                continue
            self._entries[key] = CachedPage(page, tuple(token_ids[i * self.page_size:(i + 1) * self.page_size]))
            self._key_of[page] = key
            self._refs[page] = 1  # the publishing sequence's
        last = self._entries[keys[-1]]
        if last.checkpoint is not None:  # another sequence got there first
            self.discard_checkpoint(checkpoint)
        else:
            last.checkpoint = checkpoint
        self._checkpoints[keys[-1]] = None
        self._checkpoints.move_to_end(keys[-1])

    def _reference(self, key: int, page: int) -> None:
        self._refs[page] += 1
        self._evictable.pop(key, None)

    def _evict(self, key: int) -> None:
        entry = self._entries.pop(key)
        del self._evictable[key], self._key_of[entry.page], self._refs[entry.page]
        if entry.checkpoint is not None:
            self._drop_checkpoint(key, entry)
        self.blocks.free([entry.page])

    def _drop_checkpoint(self, key: int, entry: CachedPage | None = None) -> None:
        entry = entry or self._entries[key]
        self._free_checkpoints.append(entry.checkpoint)
        entry.checkpoint = None
        self._checkpoints.pop(key, None)
