"""FP8 block-scaled weights (Qwen/Qwen3.5-*-FP8): e4m3 values with one fp32 scale per block.

`weight_scale_inv[i, j]` covers rows i*b0 .. (i+1)*b0-1 and columns j*b1 .. (j+1)*b1-1 of the
weight (the last block in each direction may be partial); dequantised = weight * scale_inv.
Fused 3D expert tensors [E, out, in] carry [E, out/b0, in/b1] scales the same way.
"""
from __future__ import annotations

import torch


def scale_name(name: str) -> str:
    """The scale tensor's name: X.weight -> X.weight_scale_inv, fused X.gate_up_proj -> X.gate_up_proj_scale_inv."""
    return name + "_scale_inv"


def dequantize_blockwise(weight: torch.Tensor, scale_inv: torch.Tensor,
                         block: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """fp32 weight from e4m3 values and per-block scales over the last two dimensions."""
    rows, cols = weight.shape[-2:]
    scale = scale_inv.float().repeat_interleave(block[0], dim=-2)[..., :rows, :]
    scale = scale.repeat_interleave(block[1], dim=-1)[..., :cols]
    return weight.float() * scale
