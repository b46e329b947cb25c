"""Every tensor of a Qwen3.5 checkpoint, named and shaped as on disk in the Hugging Face layout.

This is the one enumeration the planner's byte counts, the demo-checkpoint writer and the
runtime loader's checks share. Shapes are the stored shapes: an FP4 tensor is a uint8 array
holding two e2m1 values per byte, so its last dimension is half the logical one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import CheckpointConfig, TextConfig, VisionConfig

PRECISIONS = ("bf16", "fp8", "nvfp4")
EXPERT_LAYOUTS = ("per_expert", "fused")
COMPONENTS = ("language", "mtp", "vision")
SHARDINGS = ("column", "row", "replicated", "expert", "vocab")

# Bytes per stored element. fp4_e2m1 elements are the packed uint8 bytes (two values each).
DTYPE_BYTES = {
    "bf16": 2,
    "fp32": 4,
    "fp8_e4m3": 1,
    "fp8_e4m3_scale": 1,
    "fp4_e2m1": 1,
}
# The safetensors dtype string each of our dtypes is written as.
SAFETENSORS_DTYPES = {
    "bf16": "BF16",
    "fp32": "F32",
    "fp8_e4m3": "F8_E4M3",
    "fp8_e4m3_scale": "F8_E4M3",
    "fp4_e2m1": "U8",
}
# Name endings of quantization scales: bytes on disk, but not model parameters.
SCALE_SUFFIXES = ("weight_scale_inv", "_scale_inv", "weight_scale", "weight_scale_2",
                  "input_scale", "k_scale", "v_scale")

LANGUAGE_PREFIX = "model.language_model."
VISION_PREFIX = "model.visual."
MTP_PREFIX = "mtp."
NVFP4_GROUP = 16


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One stored tensor: on-disk name and shape, stored dtype, owning component, TP sharding."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    component: str  # "language" | "mtp" | "vision"
    sharding: str  # "column" | "row" | "replicated" | "expert" | "vocab"

    @property
    def numel(self) -> int:
        """Stored elements (packed bytes for FP4)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes on disk."""
        return self.numel * DTYPE_BYTES[self.dtype]

    @property
    def is_scale(self) -> bool:
        """True for quantization scales, which are not model parameters."""
        return self.name.endswith(SCALE_SUFFIXES)

    @property
    def params(self) -> int:
        """Model parameters held: 2 per packed FP4 byte, 0 for scales."""
        if self.is_scale:
            return 0
        return self.numel * 2 if self.dtype == "fp4_e2m1" else self.numel


EXPERT_INDEX = "{e}"  # placeholder for the expert number in a repeated group's names


class _Emitter:
    """Collects TensorSpecs, quantizing the linears the chosen precision quantizes.

    Routed experts are recorded once as a group with a repeat count, their names holding
    EXPERT_INDEX: a 397B checkpoint has ~95k expert tensors, and byte counting needs only
    one of each.
    """

    def __init__(self, precision: str, block: tuple[int, int]):
        self.precision = precision
        self.block = block
        self.groups: list[tuple[int, list[TensorSpec]]] = []
        self.specs: list[TensorSpec] = []
        self.groups.append((1, self.specs))

    def repeat(self, count: int) -> None:
        """Specs emitted until end_repeat() repeat `count` times (once per expert)."""
        self.specs = []
        self.groups.append((count, self.specs))

    def end_repeat(self) -> None:
        """Back to single specs after a repeated group."""
        self.specs = []
        self.groups.append((1, self.specs))

    def expanded(self) -> list[TensorSpec]:
        """Every spec, repeated groups written out expert by expert."""
        out: list[TensorSpec] = []
        for count, specs in self.groups:
            if count == 1 and not any(EXPERT_INDEX in s.name for s in specs):
                out.extend(specs)
                continue
            for e in range(count):
                index = str(e)
                out.extend(TensorSpec(s.name.replace(EXPERT_INDEX, index), s.shape, s.dtype,
                                      s.component, s.sharding) for s in specs)
        return out

    def plain(self, name: str, shape: tuple[int, ...], component: str, sharding: str,
              dtype: str = "bf16") -> None:
        self.specs.append(TensorSpec(name, tuple(shape), dtype, component, sharding))

    def linear(self, name: str, out_dim: int, in_dim: int, component: str, sharding: str,
               fp8: bool = True) -> None:
        """A Linear weight `name.weight` [out, in]; FP8 adds a block scale when `fp8`."""
        if self.precision == "fp8" and fp8:
            self.plain(f"{name}.weight", (out_dim, in_dim), component, sharding, "fp8_e4m3")
            self.plain(f"{name}.weight_scale_inv", self._blocks(out_dim, in_dim), component,
                       sharding, "fp32")
        else:
            self.plain(f"{name}.weight", (out_dim, in_dim), component, sharding)

    def nvfp4_linear(self, name: str, out_dim: int, in_dim: int, component: str) -> None:
        """A modelopt NVFP4 Linear: packed e2m1 weight, FP8 group scales, two fp32 scalars."""
        self.plain(f"{name}.weight", (out_dim, in_dim // 2), component, "expert", "fp4_e2m1")
        self.plain(f"{name}.weight_scale", (out_dim, in_dim // NVFP4_GROUP), component, "expert",
                   "fp8_e4m3_scale")
        self.plain(f"{name}.weight_scale_2", (), component, "expert", "fp32")
        self.plain(f"{name}.input_scale", (), component, "expert", "fp32")

    def _blocks(self, out_dim: int, in_dim: int) -> tuple[int, int]:
        return (math.ceil(out_dim / self.block[0]), math.ceil(in_dim / self.block[1]))


def _attention(emit: _Emitter, p: str, t: TextConfig, component: str, kv_scales: bool) -> None:
    # q_proj holds query and output gate interleaved per head, hence 2x when gated.
    q_out = t.num_attention_heads * t.head_dim * (2 if t.attn_output_gate else 1)
    kv_out = t.num_key_value_heads * t.head_dim
    emit.linear(f"{p}self_attn.q_proj", q_out, t.hidden_size, component, "column")
    emit.linear(f"{p}self_attn.k_proj", kv_out, t.hidden_size, component, "column")
    emit.linear(f"{p}self_attn.v_proj", kv_out, t.hidden_size, component, "column")
    emit.linear(f"{p}self_attn.o_proj", t.hidden_size, t.num_attention_heads * t.head_dim,
                component, "row")
    emit.plain(f"{p}self_attn.q_norm.weight", (t.head_dim,), component, "replicated")
    emit.plain(f"{p}self_attn.k_norm.weight", (t.head_dim,), component, "replicated")
    if kv_scales:
        emit.plain(f"{p}self_attn.k_proj.k_scale", (), component, "replicated", "fp32")
        emit.plain(f"{p}self_attn.v_proj.v_scale", (), component, "replicated", "fp32")


def _linear_attention(emit: _Emitter, p: str, t: TextConfig) -> None:
    key_dim = t.linear_num_key_heads * t.linear_key_head_dim
    value_dim = t.linear_num_value_heads * t.linear_value_head_dim
    conv_dim = 2 * key_dim + value_dim
    nv = t.linear_num_value_heads
    c = "language"
    emit.linear(f"{p}linear_attn.in_proj_qkv", conv_dim, t.hidden_size, c, "column")
    emit.linear(f"{p}linear_attn.in_proj_z", value_dim, t.hidden_size, c, "column")
    # in_proj_a / in_proj_b and the conv stay BF16 in the FP8 checkpoints.
    emit.linear(f"{p}linear_attn.in_proj_b", nv, t.hidden_size, c, "column", fp8=False)
    emit.linear(f"{p}linear_attn.in_proj_a", nv, t.hidden_size, c, "column", fp8=False)
    emit.plain(f"{p}linear_attn.conv1d.weight", (conv_dim, 1, t.linear_conv_kernel_dim), c,
               "column")
    emit.plain(f"{p}linear_attn.dt_bias", (nv,), c, "column")
    emit.plain(f"{p}linear_attn.A_log", (nv,), c, "column")
    emit.plain(f"{p}linear_attn.norm.weight", (t.linear_value_head_dim,), c, "replicated")
    emit.linear(f"{p}linear_attn.out_proj", t.hidden_size, value_dim, c, "row")


def _experts(emit: _Emitter, p: str, t: TextConfig, component: str, layout: str,
             fp4: bool) -> None:
    e_count, inter, hidden = t.num_experts, t.moe_intermediate_size, t.hidden_size
    if layout == "fused":
        if fp4:
            raise InputError(
                "NVFP4 checkpoints store routed experts one per module, not fused",
                "use expert_layout='per_expert' with precision 'nvfp4'",
            )
        for name, out_dim, in_dim in (("gate_up_proj", 2 * inter, hidden),
                                      ("down_proj", hidden, inter)):
            full = f"{p}mlp.experts.{name}"
            if emit.precision == "fp8":
                # transformers' fused FP8 experts: `<name>_scale_inv` [E, out/128, in/128].
                emit.plain(full, (e_count, out_dim, in_dim), component, "expert", "fp8_e4m3")
                emit.plain(f"{full}_scale_inv", (e_count, *emit._blocks(out_dim, in_dim)),
                           component, "expert", "fp32")
            else:
                emit.plain(full, (e_count, out_dim, in_dim), component, "expert")
        return
    emit.repeat(e_count)
    base = f"{p}mlp.experts.{EXPERT_INDEX}."
    for name, out_dim, in_dim in (("gate_proj", inter, hidden), ("up_proj", inter, hidden),
                                  ("down_proj", hidden, inter)):
        if fp4:
            emit.nvfp4_linear(base + name, out_dim, in_dim, component)
        else:
            emit.linear(base + name, out_dim, in_dim, component, "expert")
    emit.end_repeat()


def _mlp(emit: _Emitter, p: str, t: TextConfig, component: str, layout: str, fp4: bool) -> None:
    h = t.hidden_size
    if not t.is_moe:
        emit.linear(f"{p}mlp.gate_proj", t.intermediate_size, h, component, "column")
        emit.linear(f"{p}mlp.up_proj", t.intermediate_size, h, component, "column")
        emit.linear(f"{p}mlp.down_proj", h, t.intermediate_size, component, "row")
        return
    # The router and the shared-expert gate are kept BF16 by every quantized export.
    emit.linear(f"{p}mlp.gate", t.num_experts, h, component, "replicated", fp8=False)
    _experts(emit, p, t, component, layout, fp4)
    shared = t.shared_expert_intermediate_size
    emit.linear(f"{p}mlp.shared_expert.gate_proj", shared, h, component, "column")
    emit.linear(f"{p}mlp.shared_expert.up_proj", shared, h, component, "column")
    emit.linear(f"{p}mlp.shared_expert.down_proj", h, shared, component, "row")
    emit.linear(f"{p}mlp.shared_expert_gate", 1, h, component, "replicated", fp8=False)


def _language(emit: _Emitter, t: TextConfig, layout: str, nvfp4: bool) -> None:
    p, h, c = LANGUAGE_PREFIX, t.hidden_size, "language"
    emit.plain(f"{p}embed_tokens.weight", (t.vocab_size, h), c, "vocab")
    for i, layer_type in enumerate(t.layer_types):
        lp = f"{p}layers.{i}."
        emit.plain(f"{lp}input_layernorm.weight", (h,), c, "replicated")
        if layer_type == "full_attention":
            _attention(emit, lp, t, c, kv_scales=nvfp4)
        else:
            _linear_attention(emit, lp, t)
        emit.plain(f"{lp}post_attention_layernorm.weight", (h,), c, "replicated")
        _mlp(emit, lp, t, c, layout, fp4=nvfp4)
    emit.plain(f"{p}norm.weight", (h,), c, "replicated")


def _mtp(emit: _Emitter, t: TextConfig, layout: str) -> None:
    h, c = t.hidden_size, "mtp"
    emit.plain(f"{MTP_PREFIX}pre_fc_norm_embedding.weight", (h,), c, "replicated")
    emit.plain(f"{MTP_PREFIX}pre_fc_norm_hidden.weight", (h,), c, "replicated")
    # fc maps cat(norm(embedding), norm(hidden)) [2H] -> H; kept BF16 in the FP8 checkpoints.
    emit.linear(f"{MTP_PREFIX}fc", h, 2 * h, c, "replicated", fp8=False)
    for i in range(t.mtp_num_hidden_layers):
        lp = f"{MTP_PREFIX}layers.{i}."
        emit.plain(f"{lp}input_layernorm.weight", (h,), c, "replicated")
        _attention(emit, lp, t, c, kv_scales=False)
        emit.plain(f"{lp}post_attention_layernorm.weight", (h,), c, "replicated")
        # NVFP4 exports leave the MTP head in BF16.
        _mlp(emit, lp, t, c, layout, fp4=False)
    emit.plain(f"{MTP_PREFIX}norm.weight", (h,), c, "replicated")


def _vision(emit: _Emitter, v: VisionConfig) -> None:
    p, d, c = VISION_PREFIX, v.hidden_size, "vision"

    def linear_with_bias(name: str, out_dim: int, in_dim: int, sharding: str) -> None:
        emit.plain(f"{name}.weight", (out_dim, in_dim), c, sharding)
        # A row-parallel layer adds its bias once, after the reduction: replicated.
        emit.plain(f"{name}.bias", (out_dim,), c, "column" if sharding == "column" else
                   "replicated")

    def layer_norm(name: str, dim: int) -> None:
        emit.plain(f"{name}.weight", (dim,), c, "replicated")
        emit.plain(f"{name}.bias", (dim,), c, "replicated")

    emit.plain(f"{p}patch_embed.proj.weight",
               (d, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size), c,
               "replicated")
    emit.plain(f"{p}patch_embed.proj.bias", (d,), c, "replicated")
    emit.plain(f"{p}pos_embed.weight", (v.num_position_embeddings, d), c, "replicated")
    for i in range(v.depth):
        bp = f"{p}blocks.{i}."
        layer_norm(f"{bp}norm1", d)
        layer_norm(f"{bp}norm2", d)
        linear_with_bias(f"{bp}attn.qkv", 3 * d, d, "column")
        linear_with_bias(f"{bp}attn.proj", d, d, "row")
        linear_with_bias(f"{bp}mlp.linear_fc1", v.intermediate_size, d, "column")
        linear_with_bias(f"{bp}mlp.linear_fc2", d, v.intermediate_size, "row")
    merged = d * v.spatial_merge_size**2
    layer_norm(f"{p}merger.norm", d)
    linear_with_bias(f"{p}merger.linear_fc1", merged, merged, "column")
    linear_with_bias(f"{p}merger.linear_fc2", v.out_hidden_size, merged, "row")


def checkpoint_tensors(cfg: CheckpointConfig, precision: str = "bf16",
                       expert_layout: str = "per_expert") -> list[TensorSpec]:
    """Every tensor a `precision` checkpoint of `cfg` stores, in a stable order."""
    return _emit(cfg, precision, expert_layout).expanded()


def tensor_groups(cfg: CheckpointConfig, precision: str = "bf16",
                  expert_layout: str = "per_expert") -> list[tuple[int, list[TensorSpec]]]:
    """checkpoint_tensors as (repeat count, specs) groups; repeated names hold EXPERT_INDEX."""
    return _emit(cfg, precision, expert_layout).groups


def _emit(cfg: CheckpointConfig, precision: str, expert_layout: str) -> _Emitter:
    if precision not in PRECISIONS:
        raise InputError(f"unknown checkpoint precision '{precision}'",
                         f"use one of {', '.join(PRECISIONS)}")
    if expert_layout not in EXPERT_LAYOUTS:
        raise InputError(f"unknown expert layout '{expert_layout}'",
                         f"use one of {', '.join(EXPERT_LAYOUTS)}")
    t = cfg.text
    if precision == "nvfp4" and not t.is_moe:
        raise InputError("NVFP4 checkpoints quantize the routed experts; this model is dense",
                         "use precision 'bf16' or 'fp8'")
    block = (128, 128)
    quant = cfg.quantization
    if quant is not None and quant.method == "fp8" and quant.weight_block_size:
        block = tuple(quant.weight_block_size[:2])
    emit = _Emitter(precision, block)
    _language(emit, t, expert_layout, nvfp4=precision == "nvfp4")
    # Only an untied checkpoint stores lm_head; it stays BF16 in every quantized export.
    if not cfg.tie_word_embeddings:
        emit.plain("lm_head.weight", (t.vocab_size, t.hidden_size), "language", "vocab")
    if t.mtp_num_hidden_layers > 0:
        _mtp(emit, t, expert_layout)
    if cfg.vision is not None:
        _vision(emit, cfg.vision)
    return emit
