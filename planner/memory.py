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


def conv_bytes_per_step(text: TextConfig, tp: int, conv_dtype: str = "bf16") -> float:
    """One Gated DeltaNet layer's conv state per step of its window on one GPU (engines that keep drafts add steps)."""
    channels = (2 * text.linear_num_key_heads * text.linear_key_head_dim
                + text.linear_num_value_heads * text.linear_value_head_dim) // tp
    return channels * CACHE_DTYPE_BYTES[conv_dtype]


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
