"""Continuous batching: admit waiting sequences into cache rows and plan each engine step.

Plain bookkeeping, no torch. A sequence holds one cache row from admission to its end.
Every step decodes all sequences whose prompt is in the cache, and spends up to
`max_prefill_tokens` on prompt chunks of newly admitted ones (oldest first, at most
`prefill_chunk_size` tokens per chunk), so a long prompt never stalls running decodes
for more than one chunk's time.

With a paged KV pool smaller than rows x context (`kv_pages`), admission also reserves the
pages a sequence can ever fill (prompt + max_tokens) and returns them when it ends, so a
running sequence never finds the pool empty and nothing is preempted. The price is that a
request which asks for the whole context holds that many pages even when it stops early.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class QueueFull(Exception):
    """The waiting queue cannot take the sequences: the caller should retry later."""


class Status(Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    PREFILLING = "prefilling"
    DECODING = "decoding"
    FINISHED = "finished"


@dataclass
class SchedulerConfig:
    """Capacity limits: rows, queue length, context and the per-step prefill budget."""

    max_running: int = 16
    max_waiting: int = 256
    max_model_len: int = 4096
    prefill_chunk_size: int = 256
    max_prefill_tokens: int = 512
    kv_pages: int | None = None  # pages in the KV pool (None: every row holds a full context)
    page_size: int = 16
    reserve_extra_tokens: int = 0  # room a sequence needs beyond prompt + max_tokens (speculation's verify)

    def validate(self) -> None:
        """Raise ValueError naming the first limit that is not a positive integer."""
        for name in ("max_running", "max_model_len", "prefill_chunk_size", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")
        if self.page_size < 1 or (self.kv_pages is not None and self.kv_pages < 1):
            raise ValueError(f"a KV pool needs positive sizes, got {self.kv_pages} pages of {self.page_size} tokens")

    def pages_reserved(self, prompt_len: int, max_tokens: int) -> int:
        """Pages a sequence can ever fill: its prompt, every token it may generate, and the extra room."""
        return -(-(prompt_len + max_tokens + self.reserve_extra_tokens) // self.page_size)


@dataclass(eq=False)
class Sequence:
    """One generation stream: a prompt, its output so far and its cache row."""

    seq_id: int
    prompt_ids: list[int]
    max_tokens: int
    output_ids: list[int] = field(default_factory=list)
    row: int | None = None
    num_prefilled: int = 0  # prompt tokens already written to the row
    status: Status = Status.WAITING

    @property
    def last_token(self) -> int:
        """The token the next decode step feeds."""
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]


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
class StepPlan:
    """One engine step: prompt chunks to prefill, then one token for every decoding sequence."""

    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)

    @property
    def sampled(self) -> list[Sequence]:
        """Sequences that get a new token this step, in the order their logits are stacked."""
        return [chunk.seq for chunk in self.prefills if chunk.completes_prompt] + self.decodes

    @property
    def empty(self) -> bool:
        """Whether the step has nothing to run."""
        return not self.prefills and not self.decodes


class Scheduler:
    """Waiting queue, row allocation and step planning for the engine loop."""

    def __init__(self, config: SchedulerConfig):
        config.validate()
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order
        self._free_rows = list(range(config.max_running - 1, -1, -1))  # pop() gives row 0 first
        self.free_pages = config.kv_pages  # pages not reserved by a running sequence (None: unlimited)

    @property
    def num_waiting(self) -> int:
        """Sequences not yet admitted."""
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        """Sequences holding a cache row."""
        return len(self.running)

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return bool(self.waiting or self.running)

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ValueError if a prompt plus its output cannot fit one cache row."""
        if prompt_len < 1:
            raise ValueError("the prompt is empty")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if prompt_len + max_tokens > self.config.max_model_len:
            raise ValueError(f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the "
                             f"context of {self.config.max_model_len} tokens")
        pool = self.config.kv_pages
        if pool is not None and self.config.pages_reserved(prompt_len, max_tokens) > pool:
            raise ValueError(f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the KV pool "
                             f"of {pool * self.config.page_size} tokens")

    def add(self, sequences: list[Sequence]) -> None:
        """Queue sequences together, or none of them (QueueFull) when the queue lacks room."""
        for seq in sequences:
            self.check_fits(len(seq.prompt_ids), seq.max_tokens)
        # Free rows take waiting sequences at the next step, so they count as room too.
        if len(self.waiting) + len(sequences) > self.config.max_waiting + len(self._free_rows):
            raise QueueFull(f"{len(self.waiting)} requests are waiting (limit {self.config.max_waiting})")
        self.waiting.extend(sequences)

    def schedule(self) -> StepPlan:
        """Admit what fits and plan the next step; prefill progress is recorded as planned."""
        while self.waiting and self._free_rows and self._reserve(self.waiting[0]):
            seq = self.waiting.popleft()
            seq.row = self._free_rows.pop()
            seq.status = Status.PREFILLING
            self.running.append(seq)
        plan = StepPlan()
        budget = self.config.max_prefill_tokens
        for seq in self.running:
            if seq.status is Status.DECODING:
                plan.decodes.append(seq)
            elif seq.status is Status.PREFILLING and budget > 0:
                size = min(len(seq.prompt_ids) - seq.num_prefilled, self.config.prefill_chunk_size, budget)
                plan.prefills.append(PrefillChunk(seq, seq.num_prefilled, seq.num_prefilled + size))
                seq.num_prefilled += size
                budget -= size
                if seq.num_prefilled == len(seq.prompt_ids):
                    seq.status = Status.DECODING
        return plan

    def finish(self, seq: Sequence) -> None:
        """Retire a sequence (finished, aborted or failed) and free its row."""
        if seq.status is Status.FINISHED:
            return
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            self._free_rows.append(seq.row)
            if self.free_pages is not None:
                self.free_pages += self.config.pages_reserved(len(seq.prompt_ids), seq.max_tokens)
        seq.status = Status.FINISHED

    def _reserve(self, seq: Sequence) -> bool:
        """Take the pages seq may fill from the pool, if they are there (first come, first served)."""
        if self.free_pages is None:
            return True
        needed = self.config.pages_reserved(len(seq.prompt_ids), seq.max_tokens)
        if needed > self.free_pages:
            return False
        self.free_pages -= needed
        return True
