"""The two RMSNorms of Qwen3.5: zero-centred (1 + w) on the residual stream, gated on GDN output.

The modules hold the weights and epsilon; the arithmetic is the kernel set's (kernels/rmsnorm,
kernels/gated_rmsnorm), so the torch reference and the Triton kernel are the only two copies.
"""
from __future__ import annotations

import torch
from torch import nn

from qwen35.runtime.kernels import KernelSet


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + w), computed in fp32; weights are stored zero-centred."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, kernels: KernelSet) -> torch.Tensor:
        """Normalise over the last dimension."""
        return kernels.rmsnorm(x, self.weight, self.eps)

    def add(self, x: torch.Tensor, residual: torch.Tensor, kernels: KernelSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual): the pre-norm residual add fused into the norm."""
        return kernels.add_rmsnorm(x, residual, self.weight, self.eps)


class GatedRMSNorm(nn.Module):
    """rmsnorm(x) * w * silu(z) with a plain (not 1 + w) weight: the Gated DeltaNet output norm."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor, kernels: KernelSet) -> torch.Tensor:
        """Normalise x over the last dimension, scale, then gate by silu(gate)."""
        return kernels.gated_rmsnorm(x, gate, self.weight, self.eps)
