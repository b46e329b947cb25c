"""Softmax attention over a KV cache: causal with per-sequence offsets, grouped-query heads."""
from qwen35.runtime.kernels.attention.reference import attention

__all__ = ["attention"]
