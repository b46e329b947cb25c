"""What `qwen35 bench` measures (full and --quick presets), random prompts, and bytes per decode step."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen35.planner import memory
from qwen35.runtime.engine.memory_sizing import CACHE_DTYPE_NAMES
from qwen35.runtime.model.qwen35_model import Qwen35Model

# Ids below the tokenizer's special tokens (248044 and up), so prompts are plain text tokens.
PROMPT_VOCAB = 248000


@dataclass(frozen=True)
class Workload:
    """Sizes of every measurement of one bench run."""

    prefill_lengths: tuple[int, ...]
    decode_batches: tuple[int, ...]
    prompt_len: int  # decode prompts
    decode_steps: int
    prefill_chunk: int  # tokens per prefill call (the runner's chunk; >= the longest prefill: one shot)
    repeats: int
    server_requests: int
    server_rate: float  # Poisson arrivals per second
    server_prompt_len: int
    server_max_tokens: int

    @property
    def max_len(self) -> int:
        """Context the runner must hold for every measurement."""
        return max(max(self.prefill_lengths) + 1, self.prompt_len + self.decode_steps + 8,
                   self.server_prompt_len + self.server_max_tokens)

    @property
    def max_batch(self) -> int:
        """Rows the runner needs."""
        return max(self.decode_batches)


FULL = Workload(prefill_lengths=(2048, 16384), decode_batches=(1, 8, 64), prompt_len=512, decode_steps=64,
                prefill_chunk=16384, repeats=5, server_requests=128, server_rate=16.0, server_prompt_len=512,
                server_max_tokens=128)
QUICK = Workload(prefill_lengths=(16, 40), decode_batches=(1, 2), prompt_len=8, decode_steps=3, prefill_chunk=32,
                 repeats=1, server_requests=4, server_rate=50.0, server_prompt_len=8, server_max_tokens=3)


def random_prompts(count: int, length: int, seed: int, vocab: int = PROMPT_VOCAB) -> list[list[int]]:
    """count prompts of length random token ids, reproducible from seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(vocab, PROMPT_VOCAB), (count, length), generator=generator).tolist()


def _nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def decode_step_bytes(model: Qwen35Model, batch: int, context: int) -> int:
    """Fewest bytes one decode step moves: text weights once, each row's state in and out, its KV read."""
    text = model.config.text
    language = model.language_model
    embed = language.embed_tokens.weight
    weights = _nbytes(language.parameters())
    if model.lm_head is not None:  # untied: the embedding is only gathered, the head read whole
        weights += _nbytes(model.lm_head.parameters()) - _nbytes([embed])
        weights += batch * embed.shape[1] * embed.element_size()
    dtype = CACHE_DTYPE_NAMES[embed.dtype]
    state = memory.state_bytes_per_slot(text, 1, "fp32", dtype).value
    kv = memory.kv_bytes_per_token(text, 1, dtype).value
    return int(weights + batch * (2 * state + (context + 1) * kv))
