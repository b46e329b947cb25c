"""The eight Qwen3.5 checkpoints, and resolving a model spec to one of them or a local dir."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import CheckpointConfig, load_config, parse_config
from qwen35.planner.models.quantization import QuantConfig


@dataclass(frozen=True)
class RegistryEntry:
    """One released model: its architecture numbers (facts §1) and the hub repos that hold it."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    linear_num_value_heads: int
    tie_word_embeddings: bool
    vision: tuple[int, int, int, int, int]  # depth, hidden, ffn, heads, out
    intermediate_size: int = 0  # dense FFN
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    # precision -> hub repo. FP8 repos seen referenced for 4B and larger; none found for the
    # 0.8B and 2B. NVFP4 is NVIDIA's modelopt export of the 397B only.
    hub_ids: tuple[tuple[str, str], ...] = ()

    @property
    def is_moe(self) -> bool:
        """True for the mixture-of-experts models."""
        return self.num_experts > 0


def _dense(name, hidden, ffn, layers, heads, kv, lin_v, tied, vision, fp8=True):
    hub = (("bf16", f"Qwen/{name}"),) + ((("fp8", f"Qwen/{name}-FP8"),) if fp8 else ())
    return RegistryEntry(name, hidden, layers, heads, kv, lin_v, tied, vision,
                         intermediate_size=ffn, hub_ids=hub)


def _moe(name, hidden, layers, heads, kv, lin_v, experts, top_k, expert_ffn, shared_ffn,
         nvfp4=False):
    hub = (("bf16", f"Qwen/{name}"), ("fp8", f"Qwen/{name}-FP8"))
    if nvfp4:
        hub += (("nvfp4", f"nvidia/{name}-NVFP4"),)
    return RegistryEntry(name, hidden, layers, heads, kv, lin_v, False,
                         (27, 1152, 4304, 16, hidden), num_experts=experts,
                         num_experts_per_tok=top_k, moe_intermediate_size=expert_ffn,
                         shared_expert_intermediate_size=shared_ffn, hub_ids=hub)


REGISTRY: tuple[RegistryEntry, ...] = (
    _dense("Qwen3.5-0.8B", 1024, 3584, 24, 8, 2, 16, True, (12, 768, 3072, 12, 1024), fp8=False),
    _dense("Qwen3.5-2B", 2048, 6144, 24, 8, 2, 16, True, (24, 1024, 4096, 16, 2048), fp8=False),
    _dense("Qwen3.5-4B", 2560, 9216, 32, 16, 4, 32, True, (24, 1024, 4096, 16, 2560)),
    _dense("Qwen3.5-9B", 4096, 12288, 32, 16, 4, 32, False, (27, 1152, 4304, 16, 4096)),
    _dense("Qwen3.5-27B", 5120, 17408, 64, 24, 4, 48, False, (27, 1152, 4304, 16, 5120)),
    _moe("Qwen3.5-35B-A3B", 2048, 40, 16, 2, 32, 256, 8, 512, 512),
    _moe("Qwen3.5-122B-A10B", 3072, 48, 32, 2, 64, 256, 8, 1024, 1024),
    _moe("Qwen3.5-397B-A17B", 4096, 60, 32, 2, 64, 512, 10, 1024, 1024, nvfp4=True),
)
MODEL_NAMES = tuple(entry.name for entry in REGISTRY)
_FULL_ATTENTION_INTERVAL = 4

# The quantization_config each kind of hub checkpoint carries (ignore lists not reproduced).
HUB_QUANTIZATION = {
    "fp8": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": [128, 128], "modules_to_not_convert": []},
    "nvfp4": {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
              "kv_cache_quant_algo": "FP8", "ignore": []},
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec resolved to a config and where its weights are."""

    name: str
    hub_id: str | None
    config: CheckpointConfig
    stored_precision: str  # "bf16" | "fp8" | "nvfp4"
    local_path: str | None
    index_total_size: int | None  # metadata.total_size of the safetensors index, bytes
    available_precisions: tuple[str, ...]  # hub checkpoints that exist (plus the local one)


def registry_config_json(name: str, precision: str = "bf16") -> dict[str, Any]:
    """The config.json dict of a registry model's hub checkpoint in `precision`."""
    entry = _entry(name)
    layers = entry.num_hidden_layers
    text: dict[str, Any] = {
        "model_type": "qwen3_5_moe_text" if entry.is_moe else "qwen3_5_text",
        "vocab_size": 248320, "hidden_size": entry.hidden_size, "num_hidden_layers": layers,
        "num_attention_heads": entry.num_attention_heads,
        "num_key_value_heads": entry.num_key_value_heads, "head_dim": 256,
        "linear_num_key_heads": 16, "linear_num_value_heads": entry.linear_num_value_heads,
        "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
        "full_attention_interval": _FULL_ATTENTION_INTERVAL,
        "layer_types": ["full_attention" if (i + 1) % _FULL_ATTENTION_INTERVAL == 0
                        else "linear_attention" for i in range(layers)],
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "attn_output_gate": True,
        "max_position_embeddings": 262144, "tie_word_embeddings": entry.tie_word_embeddings,
        "mtp_num_hidden_layers": 1, "mamba_ssm_dtype": "float32", "eos_token_id": 248044,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000,
                            "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10],
                            "mrope_interleaved": True},
    }
    if entry.is_moe:
        text.update(num_experts=entry.num_experts, num_experts_per_tok=entry.num_experts_per_tok,
                    moe_intermediate_size=entry.moe_intermediate_size,
                    shared_expert_intermediate_size=entry.shared_expert_intermediate_size)
    else:
        text["intermediate_size"] = entry.intermediate_size
    depth, hidden, ffn, heads, out = entry.vision
    model_type = "qwen3_5_moe" if entry.is_moe else "qwen3_5"
    raw: dict[str, Any] = {
        "architectures": ["Qwen3_5MoeForConditionalGeneration" if entry.is_moe
                          else "Qwen3_5ForConditionalGeneration"],
        "model_type": model_type,
        "text_config": text,
        "vision_config": {
            "model_type": f"{model_type}_vision", "depth": depth, "hidden_size": hidden,
            "intermediate_size": ffn, "num_heads": heads, "out_hidden_size": out,
            "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
            "num_position_embeddings": 2304, "in_channels": 3, "hidden_act": "gelu_pytorch_tanh",
        },
        "image_token_id": 248056, "video_token_id": 248057,
        "vision_start_token_id": 248053, "vision_end_token_id": 248054,
        "tie_word_embeddings": entry.tie_word_embeddings,
    }
    if precision != "bf16":
        raw["quantization_config"] = dict(HUB_QUANTIZATION[precision])
    return raw


def registry_config(name: str, precision: str = "bf16") -> CheckpointConfig:
    """The parsed config of a registry model's hub checkpoint in `precision`."""
    return parse_config(registry_config_json(name, precision), source=f"registry:{name}")


def _entry(name: str) -> RegistryEntry:
    for entry in REGISTRY:
        if entry.name.lower() == name.lower():
            return entry
    raise _unknown(name)


def _unknown(spec: str) -> InputError:
    candidates = {n.lower(): n for n in MODEL_NAMES}
    for entry in REGISTRY:
        candidates.update({hub.lower(): hub for _, hub in entry.hub_ids})
    close = difflib.get_close_matches(spec.lower(), list(candidates), n=1, cutoff=0.5)
    hint = f"did you mean {candidates[close[0]]}? " if close else ""
    return InputError(
        f"unknown model '{spec}'",
        f"{hint}known models: {', '.join(MODEL_NAMES)}; or pass a local checkpoint directory",
    )


def _stored_precision(quant: QuantConfig | None, where: str) -> str:
    if quant is None:
        return "bf16"
    if quant.method in ("fp8", "nvfp4"):
        return quant.method
    raise InputError(f"{where} is quantized as {quant.method}, which qwen35 does not serve",
                     "use the BF16, FP8 or NVFP4 checkpoint")


def _index_total_size(directory: Path) -> int | None:
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {index}: {err}", "re-download the index file") from err
    total = data.get("metadata", {}).get("total_size") if isinstance(data, dict) else None
    # Some exporters write the size as a float or a string; anything else means unknown.
    try:
        return int(total) if total is not None else None
    except (TypeError, ValueError):
        return None


def _same_architecture(a: CheckpointConfig, b: CheckpointConfig) -> bool:
    ta, tb = a.text, b.text
    return (a.model_type, ta.hidden_size, ta.num_hidden_layers, ta.num_attention_heads,
            ta.num_experts, ta.intermediate_size) == (
        b.model_type, tb.hidden_size, tb.num_hidden_layers, tb.num_attention_heads,
        tb.num_experts, tb.intermediate_size)


def _resolve_local(directory: Path) -> ResolvedModel:
    config = load_config(directory)
    stored = _stored_precision(config.quantization, str(directory))
    match = next((e for e in REGISTRY if _same_architecture(config, registry_config(e.name))),
                 None)
    hub = dict(match.hub_ids) if match else {}
    available = tuple(p for p in ("bf16", "fp8", "nvfp4") if p in hub or p == stored)
    return ResolvedModel(
        name=match.name if match else directory.resolve().name,
        hub_id=hub.get(stored),
        config=config,
        stored_precision=stored,
        local_path=str(directory),
        index_total_size=_index_total_size(directory),
        available_precisions=available,
    )


def _resolve_name(spec: str) -> ResolvedModel | None:
    wanted = spec.lower()
    for entry in REGISTRY:
        for precision, hub_id in entry.hub_ids:
            # A hub id, or a registry name with its precision suffix (Qwen3.5-9B-FP8).
            if wanted in (hub_id.lower(), hub_id.split("/", 1)[1].lower()):
                return ResolvedModel(
                    name=entry.name, hub_id=hub_id,
                    config=registry_config(entry.name, precision),
                    stored_precision=precision, local_path=None, index_total_size=None,
                    available_precisions=tuple(p for p, _ in entry.hub_ids),
                )
    return None


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve a registry name, a hub id or a local checkpoint directory."""
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.is_dir():
        return _resolve_local(path)
    resolved = _resolve_name(spec)
    if resolved is not None:
        return resolved
    base, _, suffix = spec.rsplit("/", 1)[-1].rpartition("-")
    if suffix.lower() in ("fp8", "nvfp4") and base.lower() in (n.lower() for n in MODEL_NAMES):
        entry = _entry(base)
        raise InputError(
            f"no {suffix.upper()} checkpoint of {entry.name} is known on the hub",
            f"{entry.name} comes as {', '.join(p for p, _ in entry.hub_ids)}; "
            "or pass a local checkpoint directory",
        )
    if "/" in spec and spec.split("/", 1)[1].lower() in (n.lower() for n in MODEL_NAMES):
        raise InputError(
            f"'{spec}' is not a checkpoint qwen35 knows on the hub",
            "download it and pass the local directory, or use the Qwen/ or nvidia/ repo",
        )
    raise _unknown(spec)
