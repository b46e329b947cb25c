"""Gated RMSNorm, the Gated DeltaNet output norm: rmsnorm(x) * w * silu(z) with a plain weight."""
from qwen35.runtime.kernels.gated_rmsnorm.reference import gated_rmsnorm

__all__ = ["gated_rmsnorm"]
