"""Continuous batching, and the one owner of the engine's books: admission, step plans, post-step work.

Plain bookkeeping, no torch. The scheduler owns the KV page allocator and the state slot
allocator: a sequence is admitted when a slot and every page it can ever fill are free, holds
them to its end, and gives them back in `finish`. Every step decodes all sequences whose prompt
is in the cache, and spends up to the prefill budget on prompt chunks of admitted ones (oldest
first, at most one chunk each), so a long prompt never stalls running decodes for more than one
chunk's time. `postprocess` appends each step's tokens and retires what ended, in one place.
With prefix caching (engine/prefix_cache.py) a sequence is admitted with the cached pages of the
longest reusable prefix of its prompt and starts prefilling after them; its prefill stops once
at the last page boundary before its final token, where the runner takes a state checkpoint that
`postprocess` publishes with the pages before it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.kv_pool import BlockManager, pages_for
from qwen35.runtime.engine.outputs import GenerationOutput, TokenLogprob
from qwen35.runtime.engine.prefix_cache import PrefixCache, PrefixHit, page_keys
from qwen35.runtime.engine.sequence import Sequence, Status
from qwen35.runtime.engine.state_pool import SlotAllocator


class QueueFull(Exception):
    """The waiting queue cannot take the sequences: the caller should retry later."""


@dataclass
class PrefillChunk:
    """Prompt tokens [start, end) of one sequence to write this step."""

    seq: Sequence
    start: int
    end: int
    checkpoint_slot: int | None = None  # copy the sequence's state here after this chunk (a prefix checkpoint)

    @property
    def completes_prompt(self) -> bool:
        """Whether this chunk is the prompt's last, so its logits give the first token."""
        return self.end == len(self.seq.prompt_ids)


@dataclass
class ScheduledBatch:
    """One engine step: prompt chunks to prefill, then one decode (or speculation) per decoding sequence."""

    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)  # new this step: their block tables go to the device

    @property
    def sampled(self) -> list[Sequence]:
        """Sequences that get tokens this step, in the order the runner returns them."""
        return [chunk.seq for chunk in self.prefills if chunk.completes_prompt] + self.decodes

    @property
    def sequences(self) -> list[Sequence]:
        """Every sequence the step runs."""
        return [chunk.seq for chunk in self.prefills] + self.decodes

    @property
    def empty(self) -> bool:
        """Whether the step has nothing to run."""
        return not self.prefills and not self.decodes


@dataclass
class StepOutput:
    """What the runner produced for a batch: per sampled sequence, its new tokens (1, or up to k + 1)."""

    token_ids: list[list[int]]
    logprobs: list[list[TokenLogprob | None]]
    num_drafted: int = 0  # speculation: drafts proposed and accepted this step
    num_accepted: int = 0


class Scheduler:
    """Waiting queue, slot and page allocation, step planning and post-step work for the engine loop."""

    def __init__(self, config: EngineConfig, num_slots: int, num_pages: int):
        config.validate()
        self.config = config
        self.slots = SlotAllocator(num_slots)
        self.blocks = BlockManager(num_pages, config.page_size)
        self.prefix = PrefixCache(self.blocks, first_checkpoint_slot=num_slots, num_checkpoints=config.num_checkpoints)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order
        self._publishing: dict[int, Sequence] = {}  # key of a checkpoint still to take -> the prefill taking it
        self.cached_prompt_tokens = 0  # prompt tokens admitted from the prefix cache, and prefilled
        self.computed_prompt_tokens = 0

    @property
    def num_waiting(self) -> int:
        """Sequences not yet admitted."""
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        """Sequences holding a state slot."""
        return len(self.running)

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return bool(self.waiting or self.running)

    @property
    def kv_cache_usage(self) -> float:
        """Share of the KV pool's pages held by running sequences (unreferenced cached pages count as free)."""
        return 1 - self.prefix.num_available_pages / self.blocks.num_pages

    @property
    def num_available_pages(self) -> int:
        """Pages an admission can get: free, or cached and held by no sequence."""
        return self.prefix.num_available_pages

    def capacity_tokens(self, prompt_len: int, max_tokens: int) -> int:
        """The cache positions a sequence may ever write: prompt, output, and speculation's room."""
        return prompt_len + max_tokens + self.config.reserved_tokens_per_sequence

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ValueError if a prompt plus its output can never be served."""
        if prompt_len < 1:
            raise ValueError("the prompt is empty")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if prompt_len + max_tokens > self.config.max_model_len:
            raise ValueError(f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the "
                             f"context of {self.config.max_model_len} tokens")
        needed = pages_for(self.capacity_tokens(prompt_len, max_tokens), self.blocks.page_size)
        if needed > self.blocks.num_pages:
            raise ValueError(f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the KV pool "
                             f"of {self.blocks.num_pages * self.blocks.page_size} tokens")

    def add(self, sequences: list[Sequence]) -> None:
        """Queue sequences together, or none of them (QueueFull) when the queue lacks room."""
        for seq in sequences:
            self.check_fits(len(seq.prompt_ids), seq.max_tokens)
        # Free slots take waiting sequences at the next step, so they count as room too.
        if len(self.waiting) + len(sequences) > self.config.max_queue + self.slots.num_free:
            raise QueueFull(f"{len(self.waiting)} requests are waiting (limit {self.config.max_queue})")
        self.waiting.extend(sequences)

    def schedule(self) -> ScheduledBatch:
        """Admit what fits (first come, first served) and plan the next step; prefill progress is recorded."""
        batch = ScheduledBatch()
        while self.waiting and self.slots.num_free:
            seq = self.waiting[0]
            if not self._admit(seq):
                break
            self.waiting.popleft()
            self.running.append(seq)
            batch.admitted.append(seq)
        budget = self.config.prefill_tokens_per_step
        for seq in self.running:
            if seq.status is Status.DECODING:
                batch.decodes.append(seq)
            elif seq.status is Status.PREFILLING and budget > 0:
                batch.prefills.append(self._next_chunk(seq, budget))
                budget -= batch.prefills[-1].end - batch.prefills[-1].start
        return batch

    def _admit(self, seq: Sequence) -> bool:
        """Give seq a slot and its pages (the cached prefix's first), or leave it waiting (False)."""
        capacity = self.capacity_tokens(len(seq.prompt_ids), seq.max_tokens)
        keys = self._prompt_keys(seq)
        if keys and keys[-1] in self._publishing:
            return False  # a running prefill is about to cache this very prefix: wait and reuse it
        hit = self.prefix.match(seq.prompt_ids, keys) if keys else PrefixHit()
        if pages_for(capacity, self.blocks.page_size) - len(hit.pages) > self.prefix.num_available_pages:
            self.prefix.release(list(hit.pages))
            return False
        seq.slot = self.slots.allocate()
        seq.block_table = list(hit.pages) + self.prefix.allocate(capacity - hit.num_tokens)
        seq.cache_keys = keys
        seq.num_prefilled = seq.num_cached_tokens = hit.num_tokens
        seq.restore_slot = hit.checkpoint
        seq.status = Status.PREFILLING
        if keys and hit.num_tokens < len(keys) * self.blocks.page_size:
            self._publishing[keys[-1]] = seq  # it takes this prefix's checkpoint; the same prompt waits for it
        self.cached_prompt_tokens += hit.num_tokens
        self.computed_prompt_tokens += len(seq.prompt_ids) - hit.num_tokens
        return True

    def _prompt_keys(self, seq: Sequence) -> list[int]:
        """Cache keys of the prompt's full pages before its last token (a checkpoint's candidates)."""
        if not self.prefix.num_checkpoints:
            return []
        pages = (len(seq.prompt_ids) - 1) // self.blocks.page_size
        seed = seq.media.digest if seq.media is not None else 0  # images: their pixels, not their pad tokens
        return page_keys(seq.prompt_ids, pages, self.blocks.page_size, seed)

    def _next_chunk(self, seq: Sequence, budget: int) -> PrefillChunk:
        """The sequence's next prompt chunk; one that ends at the checkpoint boundary takes the checkpoint."""
        boundary = len(seq.cache_keys) * self.blocks.page_size
        limit = boundary if seq.num_prefilled < boundary else len(seq.prompt_ids)
        end = seq.num_prefilled + min(limit - seq.num_prefilled, self.config.prefill_chunk_size, budget)
        chunk = PrefillChunk(seq, seq.num_prefilled, end)
        if end == boundary and self._publishing.get(seq.cache_keys[-1]) is seq:
            chunk.checkpoint_slot = seq.checkpoint_slot = self.prefix.new_checkpoint()
            if chunk.checkpoint_slot is None:  # every checkpoint slot is being taken this step: skip this one
                del self._publishing[seq.cache_keys[-1]]
        seq.num_prefilled = end
        if end == len(seq.prompt_ids):
            seq.status = Status.DECODING
        return chunk

    def postprocess(self, batch: ScheduledBatch, step: StepOutput) -> list[tuple[Sequence, GenerationOutput]]:
        """Append each sampled sequence's tokens (up to where it ends); retire the ended, and the aborted
        (whose last output says so)."""
        for chunk in batch.prefills:
            if chunk.checkpoint_slot is not None and chunk.seq.checkpoint_slot == chunk.checkpoint_slot:
                seq = chunk.seq
                self.prefix.publish(seq.prompt_ids, seq.cache_keys, seq.block_table, chunk.checkpoint_slot)
                del self._publishing[seq.cache_keys[-1]]
                seq.checkpoint_slot = None
        outputs = []
        for seq, token_ids, logprobs in zip(batch.sampled, step.token_ids, step.logprobs):
            if seq.aborted or seq.status is Status.FINISHED:
                continue
            for token_id, logprob in zip(token_ids, logprobs):
                output = seq.append_token(token_id, logprob)
                outputs.append((seq, output))
                if output.finish_reason is not None:
                    self.finish(seq)
                    break
        for seq in batch.sequences:
            if seq.aborted and seq.status is not Status.FINISHED:
                self.finish(seq)
                outputs.append((seq, seq.ended("abort")))
        return outputs

    def finish(self, seq: Sequence) -> None:
        """Retire a sequence (ended, aborted or failed): its slot and pages go back. Idempotent."""
        if seq.status is Status.FINISHED:
            return
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            self.slots.free(seq.slot)
            self.prefix.release(seq.block_table)
            seq.block_table = []
            if seq.checkpoint_slot is not None:  # its checkpoint was never published (the step failed)
                self.prefix.discard_checkpoint(seq.checkpoint_slot)
                seq.checkpoint_slot = None
            if seq.cache_keys and self._publishing.get(seq.cache_keys[-1]) is seq:
                del self._publishing[seq.cache_keys[-1]]
        seq.status = Status.FINISHED
