"""Continuous batching, and the one owner of the engine's books: admission, step plans, post-step work.

Plain bookkeeping, no torch. The scheduler owns the KV page allocator and the state slot
allocator: a sequence is admitted when a slot and every page it can ever fill are free, holds
them to its end, and gives them back in `finish`. Every step decodes all sequences whose prompt
is in the cache, and spends up to the prefill budget on prompt chunks of admitted ones (oldest
first, at most one chunk each), so a long prompt never stalls running decodes for more than one
chunk's time. `postprocess` appends each step's tokens and retires what ended, in one place.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.kv_pool import BlockManager, pages_for
from qwen35.runtime.engine.outputs import GenerationOutput, TokenLogprob
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
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order

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
        """Share of the KV pool's pages held by running sequences."""
        return 1 - self.blocks.num_free_pages / self.blocks.num_pages

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
            capacity = self.capacity_tokens(len(seq.prompt_ids), seq.max_tokens)
            if not self.blocks.can_allocate(capacity):
                break
            self.waiting.popleft()
            seq.slot = self.slots.allocate()
            seq.block_table = self.blocks.allocate(capacity)
            seq.status = Status.PREFILLING
            self.running.append(seq)
            batch.admitted.append(seq)
        budget = self.config.prefill_tokens_per_step
        for seq in self.running:
            if seq.status is Status.DECODING:
                batch.decodes.append(seq)
            elif seq.status is Status.PREFILLING and budget > 0:
                size = min(len(seq.prompt_ids) - seq.num_prefilled, self.config.prefill_chunk_size, budget)
                batch.prefills.append(PrefillChunk(seq, seq.num_prefilled, seq.num_prefilled + size))
                seq.num_prefilled += size
                budget -= size
                if seq.num_prefilled == len(seq.prompt_ids):
                    seq.status = Status.DECODING
        return batch

    def postprocess(self, batch: ScheduledBatch, step: StepOutput) -> list[tuple[Sequence, GenerationOutput]]:
        """Append each sampled sequence's tokens (up to where it ends); retire the ended, and the aborted
        (whose last output says so)."""
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
            self.blocks.free(seq.block_table)
            seq.block_table = []
        seq.status = Status.FINISHED
