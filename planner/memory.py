"""Per-GPU memory arithmetic for Qwen3.5: weights, KV cache, linear-attention state, engine reserve.

Every function is pure and returns `Figure`s whose equations show the numbers used, so the CLI's
`--explain` view is the same arithmetic the solver ran, not a re-telling of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from qwen35.planner.figures import MIB, Figure, human_bytes
from qwen35.planner.models.config import TextConfig
from qwen35.planner.models.tensors import TensorSpec

# Bytes per element of the KV cache and of the linear-attention state.
CACHE_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8_e4m3": 1}


def _is_kv_projection(name: str) -> bool:
    return ".self_attn.k_proj." in name or ".self_attn.v_proj." in name


@dataclass(frozen=True)
class WeightSummary:
    """Checkpoint bytes grouped by how tensor parallelism splits them."""

    sharded: float      # divided by tp (column, row, vocab, expert)
    kv_projection: float  # K/V projections: split over at most num_key_value_heads ranks
    replicated: float   # held whole by every rank
    by_component: dict[str, float]

    @property
    def total(self) -> float:
        """All bytes summarised."""
        return self.sharded + self.kv_projection + self.replicated


def summarize_weights(groups: list[tuple[int, list[TensorSpec]]], components: tuple[str, ...]) -> WeightSummary:
    """Sum `tensor_groups` output (experts once, with a repeat count) over the chosen components."""
    sharded = kv = replicated = 0.0
    by_component: dict[str, float] = {}
    for count, specs in groups:
        for spec in specs:
            if spec.component not in components:
                continue
            size = spec.nbytes * count
            by_component[spec.component] = by_component.get(spec.component, 0.0) + size
            if _is_kv_projection(spec.name):
                kv += size
            elif spec.sharding == "replicated":
                replicated += size
            else:
                sharded += size
    return WeightSummary(sharded, kv, replicated, by_component)


def weights_per_gpu(summary: WeightSummary, text: TextConfig, tp: int) -> Figure:
    """Bytes of weights one GPU holds under tensor parallelism `tp` (experts split tp ways).

    Column/row/vocab/expert-sharded tensors are divided by tp; replicated tensors are held whole
    on every GPU; K/V projections are split across at most num_key_value_heads ranks, since a
    rank never holds less than one KV head (beyond that they are replicated).
    """
    kv_ranks = min(tp, text.num_key_value_heads)
    total = summary.sharded / tp + summary.kv_projection / kv_ranks + summary.replicated
    return Figure(
        "weights_per_gpu", total, "bytes",
        f"sharded {human_bytes(summary.sharded)} / tp {tp} + K/V projections {human_bytes(summary.kv_projection)} "
        f"/ min(tp, {text.num_key_value_heads} kv heads) + replicated {human_bytes(summary.replicated)} "
        f"= {human_bytes(total)}",
    )


def kv_heads_per_gpu(text: TextConfig, tp: int) -> int:
    """KV heads one rank stores: replicated to one head per rank when tp exceeds them."""
    return max(1, text.num_key_value_heads // tp)


def kv_bytes_per_token(text: TextConfig, tp: int, kv_dtype: str = "bf16", extra_layers: int = 0) -> Figure:
    """KV-cache bytes per token on one GPU: only the full-attention layers (plus MTP's) keep KV."""
    layers = len(text.full_attention_layer_ids) + extra_layers
    heads = kv_heads_per_gpu(text, tp)
    width = CACHE_DTYPE_BYTES[kv_dtype]
    value = 2 * heads * text.head_dim * width * layers
    extra = f" (+{extra_layers} MTP)" if extra_layers else ""
    return Figure(
        "kv_bytes_per_token_per_gpu", value, "bytes",
        f"2 (K,V) x {heads} kv heads/gpu (max(1, {text.num_key_value_heads}//{tp})) x "
        f"{text.head_dim} head_dim x {width} B ({kv_dtype}) x {layers} full-attention layers{extra} = {int(value)} B",
    )


def state_bytes_per_slot(text: TextConfig, tp: int, ssm_dtype: str = "fp32", conv_dtype: str = "bf16") -> Figure:
    """Linear-attention state of one request slot on one GPU, over every Gated DeltaNet layer.

    conv state: (2*Kd + Vd)/tp channels x (kernel-1) steps; recurrent state: (v_heads/tp) x dk x dv.
    """
    key_dim = text.linear_num_key_heads * text.linear_key_head_dim
    value_dim = text.linear_num_value_heads * text.linear_value_head_dim
    conv_channels = (2 * key_dim + value_dim) // tp
    conv = conv_channels * (text.linear_conv_kernel_dim - 1) * CACHE_DTYPE_BYTES[conv_dtype]
    heads = text.linear_num_value_heads // tp
    recurrent = heads * text.linear_key_head_dim * text.linear_value_head_dim * CACHE_DTYPE_BYTES[ssm_dtype]
    layers = len(text.linear_attention_layer_ids)
    value = (conv + recurrent) * layers
    return Figure(
        "state_bytes_per_request_per_gpu", value, "bytes",
        f"({conv_channels} conv channels x {text.linear_conv_kernel_dim - 1} x {CACHE_DTYPE_BYTES[conv_dtype]} B + "
        f"{heads} heads x {text.linear_key_head_dim}x{text.linear_value_head_dim} x {CACHE_DTYPE_BYTES[ssm_dtype]} B "
        f"({ssm_dtype})) x {layers} linear-attention layers = {human_bytes(value)}",
    )


# SGLang's default chunked-prefill size and CUDA-graph batch size by GPU memory (facts §5).
_SGLANG_BY_MEMORY_GB = ((20, 2048, 8), (35, 2048, 24), (60, 4096, 32), (90, 8192, 256), (160, 8192, 256))
_SGLANG_LARGEST = (16384, 512)


def sglang_defaults(gpu_memory_bytes: int) -> tuple[int, int]:
    """SGLang's chunked_prefill_size and cuda_graph_max_bs for a GPU of this size."""
    gpu_mb = gpu_memory_bytes / MIB
    for limit_gb, chunked, graph_bs in _SGLANG_BY_MEMORY_GB:
        if gpu_mb < limit_gb * 1024:
            return chunked, graph_bs
    return _SGLANG_LARGEST


def sglang_mem_fraction(gpu_memory_bytes: int, tp: int, pp: int = 1) -> Figure:
    """SGLang's default mem_fraction_static: reserve for activations, graphs and NCCL, as SGLang computes it."""
    gpu_mb = gpu_memory_bytes / MIB
    chunked, graph_bs = sglang_defaults(gpu_memory_bytes)
    reserved = 512 + 1.5 * max(chunked, 2048) + tp * pp / 8 * 1024 + 2 * graph_bs
    floor = ""
    if gpu_mb > 60 * 1024 and reserved < 10 * 1024:
        reserved = 10 * 1024
        floor = " (raised to the 10 GiB floor for GPUs above 60 GB)"
    fraction = round((gpu_mb - reserved) / gpu_mb, 3)
    return Figure(
        "mem_fraction_static", fraction, "fraction",
        f"reserved = 512 + 1.5 x max({chunked} chunked prefill, 2048) + {tp}x{pp}/8 x 1024 + 2 x {graph_bs} "
        f"cuda-graph bs = {reserved:.0f} MiB{floor}; ({gpu_mb:.0f} - {reserved:.0f}) / {gpu_mb:.0f} MiB = {fraction}",
    )


@dataclass(frozen=True)
class PoolSplit:
    """How the memory left after weights divides between state slots and KV tokens on one GPU."""

    budget: Figure
    state_slots: Figure
    kv_tokens: Figure
    spec_intermediate: Figure | None


def sglang_pools(
    static_bytes: float, weights_bytes: float, state_per_slot: float, kv_per_token: float,
    mamba_full_ratio: float = 0.9, draft_tokens: int = 0, slots_per_request: int = 3,
    max_running_requests: int | None = None,
) -> PoolSplit:
    """Split the static budget the way SGLang does for hybrid GDN models.

    mamba budget = rest x r/(1+r); with speculation it also holds the per-draft-token
    intermediate states of the running requests; the rest becomes KV tokens.
    """
    rest = static_bytes - weights_bytes
    budget = Figure(
        "kv_and_state_budget_per_gpu", rest, "bytes",
        f"static {human_bytes(static_bytes)} - weights {human_bytes(weights_bytes)} = {human_bytes(rest)}",
    )
    if rest <= 0:
        zero_slots = Figure("state_slots", 0, "slots", "no memory left after weights")
        zero_tokens = Figure("kv_tokens", 0, "tokens", "no memory left after weights")
        return PoolSplit(budget, zero_slots, zero_tokens, None)
    mamba_budget = rest * mamba_full_ratio / (1 + mamba_full_ratio)
    intermediate = None
    if draft_tokens:
        slots = int(mamba_budget // (state_per_slot * (1 + draft_tokens / slots_per_request)))
        running = slots // slots_per_request
        if max_running_requests is not None:
            running = min(running, max_running_requests)
        spec_bytes = state_per_slot * running * draft_tokens
        intermediate = Figure(
            "spec_intermediate_state_bytes", spec_bytes, "bytes",
            f"{running} requests x {draft_tokens} draft tokens x {human_bytes(state_per_slot)} = {human_bytes(spec_bytes)}",
        )
        equation = (f"{human_bytes(mamba_budget)} (= rest x {mamba_full_ratio}/(1+{mamba_full_ratio})) / "
                    f"({human_bytes(state_per_slot)} x (1 + {draft_tokens}/{slots_per_request})) = {slots}")
    else:
        slots = int(mamba_budget // state_per_slot)
        spec_bytes = 0.0
        equation = (f"{human_bytes(mamba_budget)} (= rest x {mamba_full_ratio}/(1+{mamba_full_ratio})) / "
                    f"{human_bytes(state_per_slot)} = {slots}")
    state_slots = Figure("state_slots", slots, "slots", equation)
    kv_bytes = rest - slots * state_per_slot - spec_bytes
    tokens = int(kv_bytes // kv_per_token)
    kv_tokens = Figure(
        "kv_tokens", tokens, "tokens",
        f"({human_bytes(rest)} - {slots} slots x {human_bytes(state_per_slot)}"
        f"{' - spec ' + human_bytes(spec_bytes) if spec_bytes else ''}) / {int(kv_per_token)} B = {tokens}",
    )
    return PoolSplit(budget, state_slots, kv_tokens, intermediate)


def sglang_max_running(kv_tokens: int, context_length: int, state_slots: int, slots_per_request: int) -> Figure:
    """SGLang's max running requests: its token-based estimate capped by the state slots."""
    estimated = max(min(int(kv_tokens / context_length * 512), 4096), 2048)
    by_tokens = kv_tokens // 2
    by_state = state_slots // slots_per_request
    value = min(estimated, by_tokens, by_state)
    return Figure(
        "max_running_requests", value, "requests",
        f"min(clamp({kv_tokens} tokens / {context_length} x 512, 2048, 4096) = {estimated}, "
        f"{kv_tokens}//2 = {by_tokens}, {state_slots} slots // {slots_per_request} per request = {by_state}) = {value}",
    )


def full_context_requests(kv_tokens: int, context_length: int, state_slots: int, slots_per_request: int) -> Figure:
    """How many requests fit at once if every one of them uses the whole context."""
    by_kv = kv_tokens // context_length
    value = min(by_kv, state_slots // slots_per_request)
    return Figure(
        "full_context_requests", value, "requests",
        f"min({kv_tokens} KV tokens // {context_length} context = {by_kv}, "
        f"{state_slots} slots // {slots_per_request}) = {value}",
    )


def slot_pools(rest_bytes: float, state_per_slot: float, kv_per_token: float, wanted_slots: int,
               context_length: int) -> tuple[Figure, Figure]:
    """Fixed state slots (one per running sequence) and a KV pool, as vLLM and the bundled runtime hold them.

    As many of the wanted slots as leave room for one full-context request's KV; the rest is KV.
    The bundled runtime's allocator sizes its pools with this same function.
    """
    if rest_bytes <= 0:
        return (Figure("state_slots", 0, "slots", "no memory left after weights"),
                Figure("kv_tokens", 0, "tokens", "no memory left after weights"))
    room = rest_bytes - context_length * kv_per_token
    slots = max(0, min(wanted_slots, int(room // state_per_slot))) if room > 0 else 0
    tokens = int((rest_bytes - slots * state_per_slot) // kv_per_token)
    return (
        Figure("state_slots", slots, "slots",
               f"min({wanted_slots} wanted, ({human_bytes(rest_bytes)} - {context_length} x {int(kv_per_token)} B "
               f"for one full context) / {human_bytes(state_per_slot)}) = {slots}"),
        Figure("kv_tokens", tokens, "tokens",
               f"({human_bytes(rest_bytes)} - {slots} x {human_bytes(state_per_slot)}) / {int(kv_per_token)} B = {tokens}"),
    )
