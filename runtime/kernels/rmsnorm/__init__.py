"""RMSNorm with zero-centred (1 + w) weights, optionally fused with the residual add."""
from qwen35.runtime.kernels.rmsnorm.reference import add_rmsnorm, rmsnorm

__all__ = ["add_rmsnorm", "rmsnorm"]
