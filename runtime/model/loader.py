"""Load a checkpoint into Qwen35Model: build on the meta device, then assign each parameter from
memory-mapped safetensors (no second copy, no random init).

Checks first, loads second: the tensors on disk are compared with the one enumeration of a
checkpoint's tensors (qwen35.planner.models.tensors) for the config's precision and expert
layout, so a missing, unexpected or mis-shaped tensor fails before any data is read.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from qwen35.planner.models.tensors import checkpoint_tensors
from qwen35.runtime.model.checkpoint import Checkpoint, open_checkpoint
from qwen35.runtime.model.errors import CheckpointError
from qwen35.runtime.model.fp8 import dequantize_blockwise, scale_name
from qwen35.runtime.model.progress import shard_progress
from qwen35.runtime.model.qwen35_model import Qwen35Model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
FUSED_GATE_UP = ".mlp.experts.gate_up_proj"
FUSED_DOWN = ".mlp.experts.down_proj"
PACKED_GATE_UP = "gate_up_proj.weight"  # our dense MLPs' packed projection: the checkpoint's gate_proj, up_proj
_SHOWN = 5  # how many offending tensors an error lists


@dataclass(frozen=True)
class ParamSource:
    """Which checkpoint tensors make up one parameter, and how they combine."""

    param: str  # our parameter name
    tensors: tuple[str, ...]  # checkpoint names, in assembly order
    kind: str  # "direct" | "concat" (rows of each, in order) | "expert_gate_up" (gate_e, up_e per expert) | "expert_down"


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name ('bfloat16', 'bf16', 'float32', ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def checkpoint_precision(ckpt: Checkpoint) -> str:
    """'bf16' (any unquantized float) or 'fp8'; other quantizations are refused here."""
    quant = ckpt.config.quantization
    if quant is None:
        return "bf16"
    if quant.method == "fp8":
        return "fp8"
    raise CheckpointError(
        f"{ckpt.root}: {quant.method} checkpoints need the GPU kernels, which the reference runtime lacks",
        "use the BF16 or FP8 checkpoint of this model",
    )


def check_supported(ckpt: Checkpoint) -> None:
    """Refuse config options this implementation would otherwise silently get wrong."""
    text = ckpt.config.text
    if text.rope_type not in ("default", "mrope"):
        raise CheckpointError(f"{ckpt.root}: rope_type {text.rope_type!r} is not implemented (plain and "
                              "multimodal RoPE are)", "remove the rope scaling from config.json")
    if not text.attn_output_gate:
        raise CheckpointError(f"{ckpt.root}: attn_output_gate false is not a Qwen3.5 layout",
                              "use a Qwen3.5 checkpoint (its attention always has an output gate)")


def expert_layout(names) -> str:
    """'fused' when experts are stored as 3D tensors, else 'per_expert'."""
    return "fused" if any(n.endswith(FUSED_GATE_UP) for n in names) else "per_expert"


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _more(items: list[str]) -> str:
    extra = len(items) - _SHOWN
    if extra <= 0:
        return ""
    tail = ", ..." if extra > 3 else ""
    return f" (and {extra} more: {', '.join(items[_SHOWN:_SHOWN + 3])}{tail})"


def validate_tensors(ckpt: Checkpoint, precision: str, layout: str) -> dict[str, tuple[int, ...]]:
    """Raise CheckpointError on missing / unexpected / mis-shaped tensors; return expected shapes."""
    expected = {s.name: s.shape for s in checkpoint_tensors(ckpt.config, precision, layout)}
    present = dict(ckpt.tensors)
    if ckpt.config.tie_word_embeddings:
        present.pop("lm_head.weight", None)  # a tied copy on disk is ignored, as transformers does
    hint = "the tensors do not match config.json: re-download the checkpoint or fix the config"
    missing = [n for n in expected if n not in present]
    if missing:
        shown = ", ".join(f"'{n}' {_shape(expected[n])}" for n in missing[:_SHOWN])
        raise CheckpointError(f"{ckpt.root}: missing tensor{'s' if len(missing) > 1 else ''} "
                              f"{shown}{_more(missing)}", hint)
    wrong = [n for n in expected if present[n].shape != tuple(expected[n])]
    if wrong:
        shown = ", ".join(f"'{n}' is {_shape(present[n].shape)} in {present[n].file.name}, "
                          f"expected {_shape(expected[n])}" for n in wrong[:_SHOWN])
        raise CheckpointError(f"{ckpt.root}: wrong shape: {shown}{_more(wrong)}", hint)
    unexpected = [n for n in present if n not in expected]
    if unexpected:
        shown = ", ".join(f"'{n}' {_shape(present[n].shape)}" for n in unexpected[:_SHOWN])
        raise CheckpointError(f"{ckpt.root}: unexpected tensor{'s' if len(unexpected) > 1 else ''} "
                              f"{shown}{_more(unexpected)}", hint)
    return expected


def checkpoint_name(param: str) -> str:
    """Our parameter name -> the checkpoint's (language_model.* and visual.* live under model.)."""
    if param.startswith(("language_model.", "visual.")):
        return "model." + param
    return param


def param_sources(model: Qwen35Model, layout: str) -> list[ParamSource]:
    """How each of the model's parameters is read from the checkpoint."""
    num_experts = model.config.text.num_experts
    sources = []
    for param, _ in model.named_parameters():
        name = checkpoint_name(param)
        if layout == "per_expert" and name.endswith(FUSED_GATE_UP):
            base = name[: -len("gate_up_proj")]
            pieces = tuple(f"{base}{e}.{proj}.weight" for e in range(num_experts) for proj in ("gate_proj", "up_proj"))
            sources.append(ParamSource(param, pieces, "expert_gate_up"))
        elif layout == "per_expert" and name.endswith(FUSED_DOWN):
            base = name[: -len("down_proj")]
            sources.append(ParamSource(param, tuple(f"{base}{e}.down_proj.weight" for e in range(num_experts)),
                                       "expert_down"))
        elif name.endswith("." + PACKED_GATE_UP):
            base = name[: -len(PACKED_GATE_UP)]
            sources.append(ParamSource(param, (f"{base}gate_proj.weight", f"{base}up_proj.weight"), "concat"))
        else:
            sources.append(ParamSource(param, (name,), "direct"))
    return sources


class _TensorReader:
    """Reads checkpoint tensors through memory-mapped shard handles, dequantising FP8."""

    def __init__(self, ckpt: Checkpoint, stack: contextlib.ExitStack, device: torch.device,
                 dtype: torch.dtype, block: tuple[int, int]):
        self.ckpt, self.device, self.dtype, self.block = ckpt, device, dtype, block
        self.handles = {shard: stack.enter_context(safe_open(shard, framework="pt", device="cpu"))
                        for shard in ckpt.shards}

    def raw(self, name: str) -> torch.Tensor:
        loc = self.ckpt.tensors[name]
        return self.handles[loc.file].get_tensor(loc.disk_name).to(self.device)

    def read(self, name: str) -> torch.Tensor:
        """The tensor in the model dtype; FP8 weights multiplied out by their block scales."""
        tensor = self.raw(name)
        scale = scale_name(name)
        if scale in self.ckpt.tensors:
            tensor = dequantize_blockwise(tensor, self.raw(scale), self.block)
        elif tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            raise CheckpointError(f"{self.ckpt.root}: '{name}' is FP8 but has no '{scale}'",
                                  "re-download the checkpoint; FP8 weights need their block scales")
        return tensor.to(self.dtype)


def _assemble(source: ParamSource, reader: _TensorReader, shape: torch.Size) -> torch.Tensor:
    if source.kind == "direct":
        tensor = reader.read(source.tensors[0])
    elif source.kind == "concat":
        tensor = torch.cat([reader.read(name) for name in source.tensors], dim=0)
    else:
        tensor = torch.empty(shape, dtype=reader.dtype, device=reader.device)
        per_expert = 2 if source.kind == "expert_gate_up" else 1
        for e in range(shape[0]):
            names = source.tensors[e * per_expert:(e + 1) * per_expert]
            torch.cat([reader.read(n) for n in names], dim=0, out=tensor[e])
    if tensor.shape != shape:
        raise CheckpointError(f"'{source.tensors[0]}' has shape {_shape(tensor.shape)}; the model's "
                              f"'{source.param}' needs {_shape(shape)}", "check config.json")
    return tensor


def _assign(model: nn.Module, param: str, tensor: torch.Tensor) -> None:
    owner, _, leaf = param.rpartition(".")
    setattr(model.get_submodule(owner), leaf, nn.Parameter(tensor, requires_grad=False))


def load_model(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
               progress: bool = True, cache_dir: str | Path | None = None) -> Qwen35Model:
    """Load a Qwen3.5 checkpoint (directory or cached hub id) as an eval-mode Qwen35Model."""
    dtype, device = resolve_dtype(dtype), torch.device(device)
    ckpt = open_checkpoint(path, cache_dir)
    check_supported(ckpt)
    precision = checkpoint_precision(ckpt)
    layout = expert_layout(ckpt.tensors)
    validate_tensors(ckpt, precision, layout)
    quant = ckpt.config.quantization
    block = tuple(quant.weight_block_size[:2]) if quant is not None and quant.weight_block_size else (128, 128)

    with torch.device("meta"):
        model = Qwen35Model(ckpt.config)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    by_shard: dict[Path, list[ParamSource]] = {shard: [] for shard in ckpt.shards}
    for source in param_sources(model, layout):
        by_shard[ckpt.tensors[source.tensors[0]].file].append(source)

    with contextlib.ExitStack() as stack:
        reader = _TensorReader(ckpt, stack, device, dtype, block)
        for shard in shard_progress(list(by_shard), f"Loading {ckpt.root.name}", enabled=progress):
            for source in by_shard[shard]:
                _assign(model, source.param, _assemble(source, reader, shapes[source.param]))
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:  # the tensor list and the model disagree: a bug, not a bad checkpoint
        raise RuntimeError(f"parameters left unloaded: {left[:_SHOWN]}")
    return model.eval()
