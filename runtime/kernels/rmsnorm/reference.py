"""RMSNorm of Qwen3.5's residual stream in plain torch: x * rsqrt(mean(x^2) + eps) * (1 + w).

Weights are stored zero-centred. The norm runs in fp32 and scales before casting back (Qwen's
order). The fused form first adds the residual in the activation dtype, as the decoder does,
and returns that sum as the new residual stream.
"""
from __future__ import annotations

import torch


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * (1 + w) over the last dimension, computed in fp32."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + eps)
    return (normed * (1.0 + weight.float())).to(x.dtype)


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(x + residual), x + residual): the pre-norm decoder's add-then-normalise."""
    total = x + residual
    return rmsnorm(total, weight, eps), total
