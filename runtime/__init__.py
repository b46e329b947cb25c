"""qwen35.runtime: the bundled Qwen3.5 runtime (model, kernels, engine, server).

The public API is imported lazily so `import qwen35.runtime` stays cheap (no torch):
    load_model(path, device="cpu", dtype=torch.float32) -> Qwen35Model
    LLM(path, device=..., dtype=...).generate(prompts, sampling_params) -> list[Output]
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "load_model": "qwen35.runtime.model.loader",
    "Qwen35Model": "qwen35.runtime.model.qwen35_model",
    "CheckpointError": "qwen35.runtime.model.errors",
    "LLM": "qwen35.runtime.llm",
    "Output": "qwen35.runtime.llm",
    "SamplingParams": "qwen35.runtime.engine.sampling",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qwen35.runtime' has no attribute {name!r}")
