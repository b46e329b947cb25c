"""The Qwen3.5 model in torch: reusable layers, the dense/MoE model, its paged cache and weight loading."""
from qwen35.runtime.model.batch import ForwardBatch, Mode
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.errors import CheckpointError
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.model.qwen35_model import Qwen35Model

__all__ = ["CheckpointError", "ForwardBatch", "Mode", "ModelCache", "Qwen35Model", "load_model"]
