"""The engine's settings: one object, its defaults written once (the server and the CLI read them here)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PAGE_SIZE = 16  # tokens per KV page: the paged attention kernels' block, and the planner's bundled page
MAX_SPECULATIVE_TOKENS = 8


@dataclass
class EngineConfig:
    """Capacity, chunking and the model-side choices of one engine."""

    max_running_requests: int = 8  # sequences decoded together: one state slot each
    max_queue: int = 256  # sequences waiting beyond those; more are refused (QueueFull)
    max_model_len: int = 4096  # prompt + output tokens of one sequence
    prefill_chunk_size: int = 256  # prompt tokens per chunk
    max_prefill_tokens: int | None = None  # prompt tokens per step (None: two chunks)
    page_size: int = DEFAULT_PAGE_SIZE
    seed: int = 0  # the generator of requests that set no seed
    speculative_tokens: int = 0  # MTP draft tokens per decode step (0: off)
    kernels: str = "auto"  # auto (Triton on CUDA, torch on CPU), triton or torch
    cuda_graphs: bool = True  # replay decode steps from CUDA graphs on a GPU (dense models)
    memory_budget_bytes: float | None = None  # KV + state pools (None: measured on CUDA, exact on CPU)
    prefix_caching: bool = True  # reuse cached prompt prefixes (KV pages + state checkpoints)
    prefix_checkpoints: int | None = None  # state checkpoint slots (None: one per running request)

    @property
    def num_checkpoints(self) -> int:
        """State slots kept for prefix-cache checkpoints (0 when caching is off)."""
        if not self.prefix_caching:
            return 0
        return self.max_running_requests if self.prefix_checkpoints is None else self.prefix_checkpoints

    @property
    def prefill_tokens_per_step(self) -> int:
        """The prompt tokens one step may prefill."""
        return self.max_prefill_tokens or 2 * self.prefill_chunk_size

    @property
    def reserved_tokens_per_sequence(self) -> int:
        """Room a sequence needs beyond prompt + max_tokens: a verify writes the last token and k drafts."""
        return self.speculative_tokens + 1 if self.speculative_tokens else 0

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        for name in ("max_running_requests", "max_model_len", "prefill_chunk_size", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_prefill_tokens is not None and self.max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1, got {self.max_prefill_tokens}")
        if self.prefix_checkpoints is not None and self.prefix_checkpoints < 0:
            raise ValueError(f"prefix_checkpoints must be >= 0, got {self.prefix_checkpoints}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if not 0 <= self.speculative_tokens <= MAX_SPECULATIVE_TOKENS:
            raise ValueError(f"speculative_tokens must be in [0, {MAX_SPECULATIVE_TOKENS}], "
                             f"got {self.speculative_tokens}")
