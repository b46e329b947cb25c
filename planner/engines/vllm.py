"""vLLM command lines (`vllm serve`)."""
from __future__ import annotations

import json
import math

from qwen35.planner.engines import versions
from qwen35.planner.engines.settings import Candidate, PoolSizing, ServeSettings
from qwen35.planner.figures import GIB, Figure, human_bytes
from qwen35.planner.plan import EngineCommand

NEWEST_KNOWN = "0.33.0"
# The first release that registers the Qwen3.5 architectures (Qwen3_5ForConditionalGeneration,
# Qwen3_5MoeForConditionalGeneration): 0.16.0 refuses them as "not supported for now".
OLDEST_SUPPORTED = "0.17.0"
SPECULATIVE_TOKENS = 2
# vLLM measures its non-KV working set (the profiling run's activation peak, CUDA graphs,
# communication buffers) at start instead of reserving by formula, so no reserve rule of the
# release can be followed: this is an estimate. --max-num-seqs' default.
UTILIZATION = 0.90
WORKING_SET_BYTES = 3 * GIB
DEFAULT_MAX_SEQS = 256
# vLLM 0.33's hybrid block pool (Platform._align_hybrid_block_size, MambaSpec, get_kv_cache_configs):
# attention kernels take blocks in multiples of 16 tokens, FlashAttention-4's head-dim-256 kernel on
# datacenter Blackwell in multiples of 128 (16-bit KV; FP8 KV runs Triton attention).
KERNEL_BLOCK = 16
BLACKWELL_FA4_BLOCK = 128
# Prefix caching is on for hybrid models, so the mamba cache mode is "align": a request holds 2 state
# blocks per mamba group, one more per draft token, and on GPUs whose GDN prefill is FlashInfer's
# (Hopper, Blackwell) one prefill checkpoint, with blocks a multiple of its 64-token checkpoint grid.
ALIGN_STATE_BLOCKS = 2
FLASHINFER_GDN_ARCHS = ("sm90", "sm100", "sm103", "sm120")
GDN_CHECKPOINT_ALIGNMENT = 64
NAME = "vLLM"
PRECISIONS = ("bf16", "fp8", "nvfp4")
FOLLOWS_DEPLOYMENT_GUIDE = False
MAX_OFFERED_NODES = 1
DATA_PARALLEL = True


def resolve_version(requested: str | None) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return versions.resolve_version("vllm", requested, NEWEST_KNOWN, OLDEST_SUPPORTED)


def max_gpus(gpus_per_node: int, nodes: int | None) -> int:
    """The most GPUs a plan may use: one node (multi-node vLLM is not planned)."""
    return gpus_per_node


def weights_precision(precision: str) -> str:
    """The precision the weights are held in on the GPU: as stored."""
    return precision


def mamba_choice(vendor: str, requested: str | None, strategy: str) -> tuple[str, int, bool, list[str]]:
    """vLLM has no mamba strategy switch: one state per sequence, page size 1 in the plan."""
    return "no_buffer", 1, False, []


def size(candidate: Candidate) -> PoolSizing:
    """One replica's block pool as vLLM 0.33 plans it: one page size for KV and state, shared blocks."""
    c = candidate
    static = c.gpu_bytes * UTILIZATION - WORKING_SET_BYTES
    available = static - c.weights_bytes
    flashinfer_gdn = c.arch in FLASHINFER_GDN_ARCHS
    kernel = BLACKWELL_FA4_BLOCK if c.arch in ("sm100", "sm103") and c.kv_dtype == "bf16" else KERNEL_BLOCK
    alignment = math.lcm(kernel, GDN_CHECKPOINT_ALIGNMENT) if flashinfer_gdn else kernel
    kv_per_layer = c.kv_per_token / c.attention_layers
    # The conv window keeps one more step per draft token.
    mamba_page = c.state_per_slot / c.linear_layers + c.draft_tokens * c.conv_bytes_per_step
    block = alignment * math.ceil(mamba_page / (alignment * kv_per_layer))
    page = block * kv_per_layer
    # vLLM groups the layers of each kind in groups the size of the attention group (MTP's layer
    # joins it): Qwen3.5's three linear-attention layers per full-attention layer make 3 mamba
    # groups; one block id holds a page for each layer of a group.
    mamba_groups = math.ceil(c.linear_layers / c.attention_layers)
    blocks = max(0, int(available // (page * c.attention_layers)))
    state_blocks = mamba_groups * (ALIGN_STATE_BLOCKS + c.draft_tokens + (1 if flashinfer_gdn else 0))
    request_blocks = math.ceil(c.context / block)
    kv_tokens = int(blocks / (request_blocks + state_blocks) * c.context)
    wanted = c.requested_running or DEFAULT_MAX_SEQS
    # Room for one full-context request (and the null block), then the state blocks of the rest.
    room = blocks - 1 - request_blocks
    held = max(0, min(wanted, room // state_blocks)) if room >= state_blocks else 0
    binding = "state blocks" if held < wanted else ("the requested value" if c.requested_running
                                                   else f"vllm's default of {wanted}")
    figures = [
        Figure("static_bytes", static, "bytes", f"{human_bytes(c.gpu_bytes)} x {UTILIZATION} - "
               f"{human_bytes(WORKING_SET_BYTES)} working set = {human_bytes(static)}"),
        Figure("kv_and_state_budget_per_gpu", available, "bytes",
               f"static {human_bytes(static)} - weights {human_bytes(c.weights_bytes)} = {human_bytes(available)}"),
        Figure("block_size", block, "tokens",
               f"{alignment} x ceil(mamba page {int(mamba_page)} B / ({alignment} x {int(kv_per_layer)} B per token "
               f"per layer)) = {block}: one attention page holds one layer's state"),
        Figure("state_slots", blocks, "blocks",
               f"{human_bytes(available)} / ({block} x {int(kv_per_layer)} B x {c.attention_layers} layers per block)"
               f" = {blocks} blocks, shared by KV and state"),
        Figure("state_blocks_per_request", state_blocks, "blocks",
               f"{mamba_groups} mamba groups x ({ALIGN_STATE_BLOCKS} + {c.draft_tokens} draft"
               f"{' + 1 prefill checkpoint' if flashinfer_gdn else ''}) = {state_blocks}"),
        Figure("kv_tokens", kv_tokens, "tokens",
               f"{blocks} blocks / ({request_blocks} KV + {state_blocks} state blocks per {c.context}-token request)"
               f" x {c.context} = {kv_tokens} (vLLM's 'GPU KV cache size')"),
        Figure("max_running_requests", held, "requests",
               f"min({wanted} wanted, ({blocks} - 1 null - {request_blocks} for one full context) // "
               f"{state_blocks} state blocks) = {held}"),
    ]
    return PoolSizing(static, UTILIZATION, kv_tokens, blocks, state_blocks, held, binding, figures,
                      block_tokens=block, block_pool_bytes=blocks * page * c.attention_layers)


def render(settings: ServeSettings, version: str) -> tuple[list[EngineCommand], list[str]]:
    """One single-node `vllm serve` command."""
    argv = [
        "vllm", "serve", settings.model_path,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--tensor-parallel-size", str(settings.tp),
    ]
    if settings.dp > 1:
        argv += ["--data-parallel-size", str(settings.dp)]
    if settings.ep > 1:
        argv.append("--enable-expert-parallel")
    argv += [
        "--max-model-len", str(settings.context_length),
        "--gpu-memory-utilization", f"{settings.mem_fraction:.2f}",
        "--max-num-seqs", str(settings.max_running_requests),
        "--reasoning-parser", "qwen3",
        "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder",
        # Structured outputs on the bundled runtime's library (llguidance, vLLM's "guidance"): the same JSON-schema
        # coverage on every engine. The dotted flag replaced --guided-decoding-backend in 0.10.2, long before
        # Qwen3.5 support.
        "--structured-outputs-config.backend", "guidance",
    ]
    if settings.mamba_ssm_dtype != "fp32":
        argv += ["--mamba-ssm-cache-dtype", {"bf16": "bfloat16", "fp16": "float16"}[settings.mamba_ssm_dtype]]
    else:
        argv += ["--mamba-ssm-cache-dtype", "float32"]
    if settings.speculative_tokens:
        config = {"method": "qwen3_next_mtp", "num_speculative_tokens": settings.speculative_tokens}
        argv += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    argv += list(settings.extra_args)
    env = {"VLLM_USE_V1": "1"} if settings.vendor == "nvidia" else {}
    return [EngineCommand(0, argv, env)], []
