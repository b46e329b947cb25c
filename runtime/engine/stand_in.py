"""A runner whose logits come from a function instead of a model.

What the engine's tests and the host-overhead benchmark drive the real engine with: the
scheduler, the real sampler, detokenizer, stop handling and streaming all run; only the
network's numbers are replaced. Subclasses implement `logits(seqs)`, [len(seqs), vocab] for the
sequences that get a token this step (prompts completing, then decodes, as ScheduledBatch.sampled).
"""
from __future__ import annotations

import torch

from qwen35.runtime.engine.sampler import Sampler
from qwen35.runtime.engine.scheduler import ScheduledBatch, StepOutput
from qwen35.runtime.engine.sequence import Sequence


class LogitsRunner:
    """The engine's Runner interface over `logits(seqs)`; text only, every slot a full context of pages."""

    takes_media = False
    media_pad_ids: dict[str, int] = {}

    def __init__(self, num_slots: int, max_len: int, vocab_size: int, page_size: int = 16, seed: int = 0):
        self.num_slots = num_slots
        self.num_pages = num_slots * -(-max_len // page_size)
        self.vocab_size = vocab_size
        self.sampler = Sampler(num_slots, vocab_size, torch.device("cpu"), seed)

    def logits(self, seqs: list[Sequence]) -> torch.Tensor:
        """[len(seqs), vocab] logits of the sequences' next tokens."""
        raise NotImplementedError

    def run(self, batch: ScheduledBatch) -> StepOutput:
        """Sample each sampled sequence's token from logits(); prompt chunks cost nothing."""
        for seq in batch.admitted:
            self.sampler.start(seq)
        seqs = batch.sampled
        if not seqs:
            return StepOutput([], [])
        return StepOutput(*self.sampler.sample(self.logits(seqs), seqs))
