"""Random-weight checkpoints of the real Qwen3.5 shapes (0.8B .. 9B), for benchmarks without a download.

The config is the registry's (the hub checkpoint's config.json, facts §1); the files are what
the demo writer writes (config, tokenizer, processor configs, sharded safetensors + index), with
its random bf16 init. Timings do not depend on the weights' values: every shape runs the same
kernels on the same sizes as the released model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from qwen35.planner.errors import InputError
from qwen35.runtime.demo.checkpoint import write_demo_checkpoint
from qwen35.planner.models.config import config_to_dict
from qwen35.planner.models.registry import registry_config

SHAPES = {"0.8b": "Qwen3.5-0.8B", "2b": "Qwen3.5-2B", "4b": "Qwen3.5-4B", "9b": "Qwen3.5-9B"}


def default_shape_dir(shape: str) -> Path:
    """Where `--shape` checkpoints are kept: $QWEN35_BENCH_DIR or ~/.cache/qwen35/bench, one folder per shape."""
    base = os.environ.get("QWEN35_BENCH_DIR") or Path.home() / ".cache" / "qwen35" / "bench"
    return Path(base) / f"random-{shape}"


def _is_complete(directory: Path, expected: dict) -> bool:
    config = directory / "config.json"
    if not config.is_file() or not (directory / "model.safetensors.index.json").is_file():
        return False
    written = json.loads(config.read_text("utf-8"))
    return written.get("text_config") == json.loads(json.dumps(expected["text_config"]))


def write_shape_checkpoint(shape: str, out_dir: str | Path | None = None, *, seed: int = 0,
                           progress=None) -> Path:
    """Write (once) a random-weight checkpoint of a registry shape; returns its directory."""
    key = shape.lower().removeprefix("qwen3.5-")
    if key not in SHAPES:
        raise InputError(f"unknown shape {shape!r}", f"choose one of {', '.join(SHAPES)}")
    cfg = registry_config(SHAPES[key])
    out = Path(out_dir) if out_dir is not None else default_shape_dir(key)
    out = out.expanduser().absolute()
    if _is_complete(out, config_to_dict(cfg)):
        return out
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and does not hold the {key} shape", "choose an empty or new directory")
    # The demo writer's file set and atomic write, fed the registry's config.
    return write_demo_checkpoint(out, seed=seed, progress=progress, config=cfg)
