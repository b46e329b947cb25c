"""Gated RMSNorm in plain torch, with transformers' Qwen3_5RMSNormGated rounding order.

x and z [..., D] (D = 128, the linear value head dim, one norm per head); weight [D] is a
plain scale (initialised to ones), not the zero-centred (1 + w) of the residual-stream norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_rmsnorm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """rmsnorm(x) * w * silu(gate) over the last dimension; the norm in fp32, output in x's dtype."""
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return (weight * normed * F.silu(gate.float())).to(x.dtype)
