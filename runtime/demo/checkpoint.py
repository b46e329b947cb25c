"""Write a tiny random-weight Qwen3.5 checkpoint in the exact Hugging Face layout, atomically."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import CheckpointConfig, config_to_dict
from qwen35.planner.models.tensors import TensorSpec, checkpoint_tensors
from qwen35.runtime.demo.config import (
    DEMO_THINKING_DEFAULT,
    demo_config,
    generation_config,
    preprocessor_config,
    video_preprocessor_config,
)
from qwen35.runtime.tokenizer.demo_tokenizer import write_demo_tokenizer

INIT_STD = 0.02
NUM_SHARDS = 2
INDEX_FILE = "model.safetensors.index.json"
# Norms stored zero-centred (applied as 1 + w): zero is the neutral value.
_ZERO_CENTRED_NORMS = ("layernorm.weight", "q_norm.weight", "k_norm.weight", "pre_fc_norm_embedding.weight",
                       "pre_fc_norm_hidden.weight")


def _is_zero_centred_norm(name: str) -> bool:
    return (name.endswith(_ZERO_CENTRED_NORMS) or name in ("model.language_model.norm.weight", "mtp.norm.weight"))


def _init_tensor(spec: TensorSpec, generator: torch.Generator) -> torch.Tensor:
    """A random value for one tensor: small normal weights, neutral norms, the usual decay init."""
    name, shape = spec.name, spec.shape
    if spec.dtype != "bf16":
        raise InputError(f"demo weights are bf16, but {name} is {spec.dtype}", "write the demo at bf16")
    if _is_zero_centred_norm(name):
        value = torch.zeros(shape)
    elif name.endswith("linear_attn.norm.weight") or (name.startswith("model.visual.") and "norm" in name
                                                        and name.endswith(".weight")):
        value = torch.ones(shape)  # gated RMSNorm and vision LayerNorms multiply by w directly
    elif name.endswith(".bias"):
        value = torch.zeros(shape)
    elif name.endswith("linear_attn.A_log"):
        # Per-head decay rates spread over [1, 16] (the reference draws from (0, 16); 1 avoids log 0).
        value = torch.empty(shape).uniform_(1.0, 16.0, generator=generator).log()
    elif name.endswith("linear_attn.dt_bias"):
        value = torch.ones(shape)
    else:
        value = torch.empty(shape).normal_(0.0, INIT_STD, generator=generator)
    return value.to(torch.bfloat16).contiguous()


def demo_weights(cfg: CheckpointConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random bf16 values for every tensor `checkpoint_tensors(cfg)` lists, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return {spec.name: _init_tensor(spec, generator) for spec in checkpoint_tensors(cfg, "bf16")}


def shard_file_name(index: int, count: int) -> str:
    """The hub's shard naming: model-00001-of-00002.safetensors."""
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def _split_shards(weights: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    # Consecutive runs of roughly equal bytes, in tensor order, every shard non-empty.
    names = list(weights)
    sizes = [weights[name].numel() * weights[name].element_size() for name in names]
    total = sum(sizes)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
    filled = 0
    for position, (name, size) in enumerate(zip(names, sizes)):
        target = min(count - 1, math.floor(filled * count / total))
        # Leave at least one tensor for each shard still to come.
        target = max(target, count - (len(names) - position))
        shards[target][name] = weights[name]
        filled += size
    return shards


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _write_shards(directory: Path, weights: dict[str, torch.Tensor]) -> None:
    shards = _split_shards(weights, NUM_SHARDS)
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        file_name = shard_file_name(number, NUM_SHARDS)
        save_file(shard, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    total_parameters = sum(tensor.numel() for tensor in weights.values())
    _write_json(directory / INDEX_FILE, {
        "metadata": {"total_size": total_size, "total_parameters": total_parameters},
        "weight_map": dict(sorted(weight_map.items())),
    })


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory", "choose another path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir} is not empty", "choose an empty or new directory, or pass --force")
        if not (out_dir / "config.json").is_file():
            # --force replaces an old checkpoint, never an arbitrary folder that happens to be named.
            raise InputError(f"{out_dir} is not empty and holds no config.json, so it is not replaced",
                             "choose an empty or new directory")


def _populate(directory: Path, cfg: CheckpointConfig, seed: int, report: Callable[[str], None]) -> None:
    report("writing config files")
    _write_json(directory / "config.json", {**config_to_dict(cfg), "dtype": "bfloat16"})
    _write_json(directory / "generation_config.json", generation_config())
    _write_json(directory / "preprocessor_config.json", preprocessor_config())
    _write_json(directory / "video_preprocessor_config.json", video_preprocessor_config())
    report("building the tokenizer")
    write_demo_tokenizer(directory, thinking_default=DEMO_THINKING_DEFAULT)
    report("generating random weights")
    weights = demo_weights(cfg, seed=seed)
    report("writing safetensors shards")
    _write_shards(directory, weights)


def write_demo_checkpoint(out_dir: str | Path, *, seed: int = 0, shape: str = "tiny", overwrite: bool = False,
                          progress: Callable[[str], None] | None = None,
                          config: CheckpointConfig | None = None) -> Path:
    """Write a random-weight checkpoint to out_dir (built beside it, then renamed into place).

    The demo `shape` by default; `config` writes another architecture (e.g. a registry model's
    real shape) with the same file set.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    cfg = config if config is not None else demo_config(shape)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda step: None)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        _populate(staging, cfg, seed, report)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        report("moving the checkpoint into place")
        _check_target(out_dir, overwrite)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, retired)  # an empty directory is replaced atomically
            os.replace(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
