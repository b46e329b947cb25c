"""A Qwen3.5 checkpoint's config.json as frozen dataclasses: parse, load and write back.

Key names and defaults follow transformers' Qwen3_5Config / Qwen3_5MoeConfig (v5): a key
missing from config.json takes the value transformers would use, so byte counts and the
runtime agree with the reference implementation on the same file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen35.planner.errors import InputError
from qwen35.planner.models._fields import REQUIRED, FieldReader
from qwen35.planner.models.quantization import QuantConfig, parse_quantization, quantization_to_dict

LINEAR_ATTENTION = "linear_attention"
FULL_ATTENTION = "full_attention"

TEXT_MODEL_TYPES = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}
VISION_MODEL_TYPES = {"qwen3_5": "qwen3_5_vision", "qwen3_5_moe": "qwen3_5_moe_vision"}
ARCHITECTURES = {
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
}
# Keys of a rope dict that TextConfig holds in named fields; any others ride along in rope_extra.
_ROPE_NAMED = {"rope_type", "type", "rope_theta", "partial_rotary_factor", "mrope_section",
               "mrope_interleaved"}


@dataclass(frozen=True)
class TextConfig:
    """The language model (`text_config`); MoE fields are zero for dense models."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int | None
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    layer_types: tuple[str, ...]
    rms_norm_eps: float
    rope_theta: float
    partial_rotary_factor: float
    mrope_section: tuple[int, ...]
    mrope_interleaved: bool
    max_position_embeddings: int
    tie_word_embeddings: bool
    attn_output_gate: bool
    num_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    shared_expert_intermediate_size: int
    norm_topk_prob: bool
    mtp_num_hidden_layers: int
    eos_token_id: int | tuple[int, ...] | None
    rope_type: str = "default"
    rope_extra: tuple[tuple[str, Any], ...] = ()
    mamba_ssm_dtype: str = "float32"

    @property
    def is_moe(self) -> bool:
        """True for the mixture-of-experts models."""
        return self.num_experts > 0

    @property
    def full_attention_layer_ids(self) -> tuple[int, ...]:
        """Indices of the softmax-attention layers (the only ones with a KV cache)."""
        return tuple(i for i, t in enumerate(self.layer_types) if t == FULL_ATTENTION)

    @property
    def linear_attention_layer_ids(self) -> tuple[int, ...]:
        """Indices of the Gated DeltaNet layers (the ones with recurrent state)."""
        return tuple(i for i, t in enumerate(self.layer_types) if t == LINEAR_ATTENTION)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """eos_token_id as a tuple, whether config.json gave one id or a list."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return self.eos_token_id


@dataclass(frozen=True)
class VisionConfig:
    """The vision tower (`vision_config`)."""

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    num_position_embeddings: int
    in_channels: int
    hidden_act: str


@dataclass(frozen=True)
class CheckpointConfig:
    """A whole checkpoint: text model, optional vision tower and quantization."""

    model_type: str
    architectures: tuple[str, ...]
    text: TextConfig
    vision: VisionConfig | None
    quantization: QuantConfig | None
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    tie_word_embeddings: bool


def _rope_settings(text: FieldReader) -> tuple[FieldReader | None, dict[str, Any]]:
    """The rope dict (transformers 5 `rope_parameters`, older `rope_scaling`) and its extras."""
    rope = text.sub("rope_parameters") or text.sub("rope_scaling")
    if rope is None:
        return None, {}
    # Lists become tuples so the frozen config stays hashable.
    extra = {k: tuple(v) if isinstance(v, list) else v
             for k, v in rope.raw.items() if k not in _ROPE_NAMED}
    return rope, extra


def _parse_layer_types(text: FieldReader, num_layers: int) -> tuple[str, ...]:
    layer_types = text.str_list("layer_types", None)
    if layer_types is None:
        # transformers derives the pattern: layer i is full attention iff (i+1) % interval == 0.
        interval = text.positive("full_attention_interval", 4)
        return tuple(
            FULL_ATTENTION if (i + 1) % interval == 0 else LINEAR_ATTENTION
            for i in range(num_layers)
        )
    unknown = sorted(set(layer_types) - {LINEAR_ATTENTION, FULL_ATTENTION})
    if unknown:
        raise InputError(
            f"{text.source}: '{text.key_path('layer_types')}' has unknown entries {unknown}",
            f"use only '{LINEAR_ATTENTION}' and '{FULL_ATTENTION}'",
        )
    if len(layer_types) != num_layers:
        raise InputError(
            f"{text.source}: '{text.key_path('layer_types')}' lists {len(layer_types)} layers "
            f"but num_hidden_layers is {num_layers}",
            "make the two agree",
        )
    return layer_types


def _parse_eos(text: FieldReader) -> int | tuple[int, ...] | None:
    value = text.raw.get("eos_token_id")
    if isinstance(value, list):
        return text.int_list("eos_token_id")
    return text.get("eos_token_id", int, None)


def _parse_text(text: FieldReader, model_type: str, tie_default: bool) -> TextConfig:
    is_moe = model_type == "qwen3_5_moe"
    expected = TEXT_MODEL_TYPES[model_type]
    given = text.get("model_type", str, expected)
    if given != expected:
        raise InputError(
            f"{text.source}: text_config.model_type is '{given}' but a {model_type} checkpoint "
            f"has '{expected}'",
            "check that config.json belongs to a Qwen3.5 checkpoint",
        )
    num_layers = text.positive("num_hidden_layers")
    rope, rope_extra = _rope_settings(text)
    rope = rope or FieldReader({}, text.source, text.key_path("rope_parameters"))

    def rope_value(key: str, kind: type, default: Any) -> Any:
        # transformers' order: the rope dict, then the flat key, then the default.
        return rope.get(key, kind, text.get(key, kind, default))

    mrope_section = rope.int_list("mrope_section", (11, 11, 10))
    rope_type = rope.get("rope_type", str, rope.get("type", str, "default"))
    return TextConfig(
        model_type=expected,
        vocab_size=text.positive("vocab_size", 248320),
        hidden_size=text.positive("hidden_size"),
        # MoE configs may omit the dense FFN width; dense configs must give it.
        intermediate_size=text.positive("intermediate_size", None if is_moe else REQUIRED),
        num_hidden_layers=num_layers,
        num_attention_heads=text.positive("num_attention_heads"),
        num_key_value_heads=text.positive("num_key_value_heads"),
        head_dim=text.positive("head_dim", 256),
        linear_num_key_heads=text.positive("linear_num_key_heads", 16),
        linear_num_value_heads=text.positive("linear_num_value_heads", 32),
        linear_key_head_dim=text.positive("linear_key_head_dim", 128),
        linear_value_head_dim=text.positive("linear_value_head_dim", 128),
        linear_conv_kernel_dim=text.positive("linear_conv_kernel_dim", 4),
        layer_types=_parse_layer_types(text, num_layers),
        rms_norm_eps=text.get("rms_norm_eps", float, 1e-6),
        rope_theta=rope_value("rope_theta", float, 10000.0),
        partial_rotary_factor=rope_value("partial_rotary_factor", float, 0.25),
        mrope_section=mrope_section,
        mrope_interleaved=rope.get("mrope_interleaved", bool, True),
        max_position_embeddings=text.positive("max_position_embeddings", 32768),
        tie_word_embeddings=text.get("tie_word_embeddings", bool, tie_default),
        attn_output_gate=text.get("attn_output_gate", bool, True),
        num_experts=text.positive("num_experts", 256) if is_moe else 0,
        num_experts_per_tok=text.positive("num_experts_per_tok", 8) if is_moe else 0,
        moe_intermediate_size=text.positive("moe_intermediate_size", 512) if is_moe else 0,
        shared_expert_intermediate_size=(
            text.positive("shared_expert_intermediate_size", 512) if is_moe else 0
        ),
        norm_topk_prob=text.get("norm_topk_prob", bool, True),
        mtp_num_hidden_layers=text.get("mtp_num_hidden_layers", int, 0),
        eos_token_id=_parse_eos(text),
        rope_type=rope_type,
        rope_extra=tuple(sorted(rope_extra.items())),
        mamba_ssm_dtype=text.get("mamba_ssm_dtype", str, "float32"),
    )


def _parse_vision(vision: FieldReader) -> VisionConfig:
    return VisionConfig(
        depth=vision.positive("depth", 27),
        hidden_size=vision.positive("hidden_size", 1152),
        intermediate_size=vision.positive("intermediate_size", 4304),
        num_heads=vision.positive("num_heads", 16),
        out_hidden_size=vision.positive("out_hidden_size", 3584),
        patch_size=vision.positive("patch_size", 16),
        temporal_patch_size=vision.positive("temporal_patch_size", 2),
        spatial_merge_size=vision.positive("spatial_merge_size", 2),
        num_position_embeddings=vision.positive("num_position_embeddings", 2304),
        in_channels=vision.positive("in_channels", 3),
        hidden_act=vision.get("hidden_act", str, "gelu_pytorch_tanh"),
    )


def parse_config(raw: dict, source: str = "config.json") -> CheckpointConfig:
    """Parse a Hugging Face Qwen3.5 / Qwen3.5-MoE config.json dict."""
    top = FieldReader(raw, source)
    model_type = top.get("model_type", str)
    if model_type not in TEXT_MODEL_TYPES:
        raise InputError(
            f"{source}: model_type '{model_type}' is not a Qwen3.5 checkpoint",
            "qwen35 supports model_type 'qwen3_5' and 'qwen3_5_moe' (the multimodal "
            "Qwen3.5 checkpoints from the hub)",
        )
    text = top.sub("text_config")
    if text is None:
        raise InputError(
            f"{source}: missing required key 'text_config'",
            "give the multimodal checkpoint's config.json, with the text model under text_config",
        )
    tie = top.get("tie_word_embeddings", bool, False)
    vision = top.sub("vision_config")
    quant = top.sub("quantization_config")
    return CheckpointConfig(
        model_type=model_type,
        architectures=top.str_list("architectures", (ARCHITECTURES[model_type],)),
        text=_parse_text(text, model_type, tie),
        vision=_parse_vision(vision) if vision is not None else None,
        quantization=parse_quantization(quant) if quant is not None else None,
        image_token_id=top.get("image_token_id", int, 248056),
        video_token_id=top.get("video_token_id", int, 248057),
        vision_start_token_id=top.get("vision_start_token_id", int, 248053),
        vision_end_token_id=top.get("vision_end_token_id", int, 248054),
        tie_word_embeddings=tie,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}", "check the path") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON: {err}", "re-download the file") from err


def load_config(path: str | Path) -> CheckpointConfig:
    """Load config.json from a checkpoint directory or a config.json path."""
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise InputError(
            f"no config.json at {config_path}",
            "pass a checkpoint directory that contains config.json, or the file itself",
        )
    raw = _read_json(config_path)
    # modelopt exports may keep quantization in hf_quant_config.json beside config.json.
    sidecar = config_path.parent / "hf_quant_config.json"
    if isinstance(raw, dict) and "quantization_config" not in raw and sidecar.is_file():
        side = _read_json(sidecar)
        if isinstance(side, dict) and isinstance(side.get("quantization"), dict):
            raw = {**raw, "quantization_config": {"quant_method": "modelopt",
                                                  **side["quantization"]}}
    return parse_config(raw, str(config_path))


def _text_to_dict(text: TextConfig) -> dict[str, Any]:
    rope = {
        "rope_type": text.rope_type,
        "rope_theta": text.rope_theta,
        "partial_rotary_factor": text.partial_rotary_factor,
        "mrope_section": list(text.mrope_section),
        "mrope_interleaved": text.mrope_interleaved,
        **dict(text.rope_extra),
    }
    out: dict[str, Any] = {
        "model_type": text.model_type,
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "head_dim": text.head_dim,
        "linear_num_key_heads": text.linear_num_key_heads,
        "linear_num_value_heads": text.linear_num_value_heads,
        "linear_key_head_dim": text.linear_key_head_dim,
        "linear_value_head_dim": text.linear_value_head_dim,
        "linear_conv_kernel_dim": text.linear_conv_kernel_dim,
        "layer_types": list(text.layer_types),
        "rms_norm_eps": text.rms_norm_eps,
        "partial_rotary_factor": text.partial_rotary_factor,
        "rope_parameters": rope,
        "max_position_embeddings": text.max_position_embeddings,
        "tie_word_embeddings": text.tie_word_embeddings,
        "attn_output_gate": text.attn_output_gate,
        "mtp_num_hidden_layers": text.mtp_num_hidden_layers,
        "mamba_ssm_dtype": text.mamba_ssm_dtype,
        "hidden_act": "silu",
        "attention_bias": False,
    }
    if text.intermediate_size is not None:
        out["intermediate_size"] = text.intermediate_size
    if text.is_moe:
        out.update(
            num_experts=text.num_experts,
            num_experts_per_tok=text.num_experts_per_tok,
            moe_intermediate_size=text.moe_intermediate_size,
            shared_expert_intermediate_size=text.shared_expert_intermediate_size,
            norm_topk_prob=text.norm_topk_prob,
        )
    if text.eos_token_id is not None:
        eos = text.eos_token_id
        out["eos_token_id"] = eos if isinstance(eos, int) else list(eos)
    return out


def config_to_dict(cfg: CheckpointConfig) -> dict[str, Any]:
    """The Hugging Face config.json dict for `cfg` (parse_config reads it back unchanged)."""
    out: dict[str, Any] = {
        "architectures": list(cfg.architectures),
        "model_type": cfg.model_type,
        "text_config": _text_to_dict(cfg.text),
        "image_token_id": cfg.image_token_id,
        "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
        "vision_end_token_id": cfg.vision_end_token_id,
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }
    if cfg.vision is not None:
        v = cfg.vision
        out["vision_config"] = {
            "model_type": VISION_MODEL_TYPES[cfg.model_type],
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "out_hidden_size": v.out_hidden_size,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "num_position_embeddings": v.num_position_embeddings,
            "in_channels": v.in_channels,
            "hidden_act": v.hidden_act,
        }
    if cfg.quantization is not None:
        out["quantization_config"] = quantization_to_dict(cfg.quantization)
    return out
