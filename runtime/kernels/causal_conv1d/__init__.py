"""Depthwise causal conv1d with carried state: prefill over a sequence and single-step update."""
from qwen35.runtime.kernels.causal_conv1d.reference import causal_conv1d, causal_conv1d_update

__all__ = ["causal_conv1d", "causal_conv1d_update"]
