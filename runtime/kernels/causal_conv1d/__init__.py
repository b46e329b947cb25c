"""Depthwise causal conv1d with its state in a slot pool: packed prefill, one-token update, speculative verify."""
from qwen35.runtime.kernels.causal_conv1d.reference import (
    causal_conv1d_update,
    causal_conv1d_varlen,
    causal_conv1d_verify,
)

__all__ = ["causal_conv1d_update", "causal_conv1d_varlen", "causal_conv1d_verify"]
