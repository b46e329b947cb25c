"""Qwen3.5 checkpoints as data: config parsing, the tensor list, the registry and weight bytes."""
from qwen35.planner.models.config import (
    CheckpointConfig,
    TextConfig,
    VisionConfig,
    config_to_dict,
    load_config,
    parse_config,
)
from qwen35.planner.models.quantization import QuantConfig
from qwen35.planner.models.registry import (
    MODEL_NAMES,
    ResolvedModel,
    registry_config,
    resolve_model,
)
from qwen35.planner.models.tensors import TensorSpec, checkpoint_tensors
from qwen35.planner.models.weights import WeightBreakdown, weight_bytes

__all__ = [
    "MODEL_NAMES",
    "CheckpointConfig",
    "QuantConfig",
    "ResolvedModel",
    "TensorSpec",
    "TextConfig",
    "VisionConfig",
    "WeightBreakdown",
    "checkpoint_tensors",
    "config_to_dict",
    "load_config",
    "parse_config",
    "registry_config",
    "resolve_model",
    "weight_bytes",
]
