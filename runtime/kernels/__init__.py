"""Kernels, one folder per op: a plain torch `reference.py` (the semantics) beside the Triton version,
both with one signature; `select_kernels` picks the set a model runs."""
from qwen35.runtime.kernels.kernel_set import KERNEL_CHOICES, KernelSet, select_kernels

__all__ = ["KERNEL_CHOICES", "KernelSet", "select_kernels"]
