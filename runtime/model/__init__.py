"""The Qwen3.5 model in torch: reusable layers, the dense/MoE model, caches and weight loading."""
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.errors import CheckpointError
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.model.qwen35_model import Qwen35Model

__all__ = ["CheckpointError", "ModelCache", "Qwen35Model", "StepInfo", "load_model"]
