"""A checkpoint's `quantization_config`: FP8 (Qwen), NVFP4 (modelopt) or MXFP4."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen35.planner.errors import InputError
from qwen35.planner.models._fields import FieldReader

# Keys under which exporters list the modules they left unquantized, in the order we look.
_IGNORE_KEYS = ("modules_to_not_convert", "ignore", "exclude_modules")


@dataclass(frozen=True)
class QuantConfig:
    """How the checkpoint's weights are quantized, as its config says."""

    method: str  # "fp8" | "nvfp4" | "mxfp4"
    fmt: str  # element format: "e4m3" for fp8, "e2m1" for the FP4 formats
    weight_block_size: tuple[int, ...] | None  # fp8: [128, 128] blocks per weight_scale_inv
    group_size: int | None  # FP4: elements per scale (16 NVFP4, 32 MXFP4)
    ignore: tuple[str, ...]  # module names / patterns left unquantized, as given
    kv_cache_dtype: str | None  # "fp8" when the checkpoint ships a quantized KV cache
    activation_scheme: str | None = None  # fp8: "dynamic" or "static"
    ignore_key: str = "modules_to_not_convert"  # which key `ignore` came from


def _ignore_list(q: FieldReader) -> tuple[tuple[str, ...], str]:
    for key in _IGNORE_KEYS:
        if q.has(key):
            return q.str_list(key), key
    return (), _IGNORE_KEYS[0]


def _kv_cache_dtype(q: FieldReader) -> str | None:
    algo = q.get("kv_cache_quant_algo", str, None)
    if algo is not None:
        return algo.lower()
    scheme = q.sub("kv_cache_scheme")
    if scheme is not None and scheme.get("num_bits", int, None) == 8:
        return "fp8"
    return None


def _modelopt_group_size(q: FieldReader) -> int | None:
    if q.has("group_size"):
        return q.positive("group_size")
    # compressed-tensors style export: config_groups.<name>.weights.group_size
    groups = q.raw.get("config_groups")
    if isinstance(groups, dict):
        for group in groups.values():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict) and isinstance(weights.get("group_size"), int):
                return weights["group_size"]
    return None


def parse_quantization(q: FieldReader) -> QuantConfig:
    """Parse the `quantization_config` object of config.json."""
    method = q.get("quant_method", str).lower()
    ignore, ignore_key = _ignore_list(q)
    if method == "fp8":
        fmt = q.get("fmt", str, "e4m3")
        if fmt != "e4m3":
            raise InputError(
                f"{q.source}: fp8 checkpoints with fmt '{fmt}' are not supported",
                "use a checkpoint quantized to e4m3 (the Qwen/Qwen3.5-*-FP8 repos)",
            )
        return QuantConfig(
            method="fp8",
            fmt=fmt,
            weight_block_size=q.int_list("weight_block_size", None),
            group_size=None,
            ignore=ignore,
            kv_cache_dtype=_kv_cache_dtype(q),
            activation_scheme=q.get("activation_scheme", str, "dynamic"),
            ignore_key=ignore_key,
        )
    if method in ("modelopt", "modelopt_fp4"):
        algo = q.get("quant_algo", str, "NVFP4")
        if algo.upper() != "NVFP4":
            raise InputError(
                f"{q.source}: modelopt quant_algo '{algo}' is not supported",
                "qwen35 reads modelopt NVFP4 checkpoints (e.g. nvidia/Qwen3.5-397B-A17B-NVFP4)",
            )
        return QuantConfig(
            method="nvfp4",
            fmt="e2m1",
            weight_block_size=None,
            group_size=_modelopt_group_size(q) or 16,
            ignore=ignore,
            kv_cache_dtype=_kv_cache_dtype(q),
            ignore_key=ignore_key if ignore else "ignore",
        )
    if method == "mxfp4":
        return QuantConfig(
            method="mxfp4",
            fmt="e2m1",
            weight_block_size=None,
            group_size=q.get("group_size", int, 32),
            ignore=ignore,
            kv_cache_dtype=_kv_cache_dtype(q),
            ignore_key=ignore_key,
        )
    raise InputError(
        f"{q.source}: quant_method '{method}' is not supported",
        "use the BF16 checkpoint, the official FP8 one (Qwen/Qwen3.5-*-FP8) "
        "or an NVFP4 modelopt export",
    )


def quantization_to_dict(quant: QuantConfig) -> dict[str, Any]:
    """The `quantization_config` dict for `quant`, in its exporter's own schema."""
    out: dict[str, Any]
    if quant.method == "fp8":
        out = {"quant_method": "fp8", "fmt": quant.fmt,
               "activation_scheme": quant.activation_scheme or "dynamic"}
        if quant.weight_block_size is not None:
            out["weight_block_size"] = list(quant.weight_block_size)
    elif quant.method == "nvfp4":
        out = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": quant.group_size}
    else:
        out = {"quant_method": "mxfp4", "group_size": quant.group_size}
    if quant.kv_cache_dtype is not None:
        out["kv_cache_quant_algo"] = quant.kv_cache_dtype.upper()
    out[quant.ignore_key] = list(quant.ignore)
    return out
