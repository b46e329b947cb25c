"""Engine-neutral serving settings the solver fills in and every renderer reads."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeSettings:
    """Everything a renderer needs, already decided: renderers only spell it."""

    model_path: str
    served_model_name: str
    host: str
    port: int
    tp: int
    ep: int
    dp: int
    nodes: int
    gpus_per_node: int
    context_length: int
    # Per data-parallel replica: without dp-attention SGLang hands every replica the same server
    # args (and vLLM every engine core its own max_num_seqs), so the flag is never a total.
    max_running_requests: int
    mem_fraction: float
    precision: str
    vendor: str                       # "nvidia" | "amd" | "cpu"
    arch: str                         # e.g. "sm90", "gfx942"
    page_size: int
    mamba_strategy: str
    disable_radix_cache: bool
    mamba_ssm_dtype: str
    speculative_tokens: int           # 0 = off
    multithread_load: bool
    allreduce_fusion: bool
    dist_init_addr: str | None
    extra_args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PoolSizing:
    """One replica's pools on one GPU as the engine will size them, and which limit binds the requests."""

    static_bytes: float               # what the engine may hold: weights + KV + state
    mem_fraction: float               # the fraction the command passes
    kv_tokens: int
    state_slots: int
    slots_per_request: int
    max_running: int                  # per replica, as the command passes it
    binding: str                      # "KV tokens", "state slots" or "the requested value"
    figures: list = field(default_factory=list)
    # Engines with one block pool for KV and state (vLLM): state_slots counts its blocks, shared.
    block_tokens: int = 0             # tokens per block; 0: separate KV and state pools
    block_pool_bytes: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One (tp, context) candidate on one GPU: what every engine's `size` reads."""

    gpu_bytes: int
    vendor: str
    nodes: int
    version: str
    tp: int
    context: int
    weights_bytes: float
    kv_per_token: float
    state_per_slot: float
    page_size: int
    mamba_strategy: str
    disable_radix_cache: bool
    draft_tokens: int
    requested_running: int | None
    vision_hidden_size: int | None
    vision_headroom: bool = True  # False: leave out the vision-tower share (a guide's validated size)
    draft_kv_per_token: float = 0.0  # the part of kv_per_token the speculative draft's own layers hold
    # Per-layer facts for engines that page KV and state per layer (vLLM's hybrid block pool).
    arch: str = ""
    kv_dtype: str = "bf16"
    attention_layers: int = 1         # layers holding KV: full attention, plus MTP's when drafting
    linear_layers: int = 1
    conv_bytes_per_step: float = 0.0  # one linear-attention layer's conv state per window step, per GPU
