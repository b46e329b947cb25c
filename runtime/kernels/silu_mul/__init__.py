"""SiLU-and-multiply, the SwiGLU activation over a fused gate/up projection output."""
from qwen35.runtime.kernels.silu_mul.reference import silu_mul

__all__ = ["silu_mul"]
