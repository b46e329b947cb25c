"""Partial rotary embedding with Qwen3.5's interleaved multimodal sections (M-RoPE).

Only the first `rotary_dim` = head_dim * partial_rotary_factor dims rotate (64 of 256),
rotate-half style: pairs are (i, i + rotary_dim/2). Positions come as [B, T] for text, or
[3, B, T] (temporal, height, width) once vision tokens are in the prompt. The frequency
slots are dealt out interleaved: slot i takes its position from the height row when
i % 3 == 1 and i < 3 * sections[1], from the width row when i % 3 == 2 and i < 3 * sections[2],
and from the temporal row otherwise. Text tokens carry the same index in all three rows, so
for text this is plain RoPE.
"""
from __future__ import annotations

import torch
from torch import nn

from qwen35.planner.models.config import TextConfig


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for given positions; holds no tensors, so it builds fine on meta."""

    def __init__(self, text: TextConfig):
        super().__init__()
        self.rotary_dim = int(text.head_dim * text.partial_rotary_factor)
        self.base = text.rope_theta
        half = self.rotary_dim // 2
        axis = [0] * half
        for slot in range(half):
            for row, offset in ((1, 1), (2, 2)):
                if slot % 3 == offset and slot < 3 * text.mrope_section[row]:
                    axis[slot] = row
        self.section_axis = tuple(axis)

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """base^(-2i/rotary_dim) for the rotary_dim/2 frequency slots, fp32."""
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device=device) / self.rotary_dim
        return 1.0 / (self.base ** exponents)

    def packed(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [N, rotary_dim] for packed positions [N] (text) or [3, N] (M-RoPE)."""
        cos, sin = self(positions.unsqueeze(-2), dtype)  # [N] -> [1, N]; [3, N] -> [3, 1, N]
        return cos[0], sin[0]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [B, T, rotary_dim] for positions [B, T] or [3, B, T]."""
        inv_freq = self.inv_freq(positions.device)
        if positions.dim() == 2:
            angles = positions[..., None].float() * inv_freq
        else:
            axis = torch.tensor(self.section_axis, device=positions.device)
            per_slot = positions.permute(1, 2, 0)[..., axis]  # [B, T, half]
            angles = per_slot.float() * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_dim dims of packed x [N, H, D] by cos, sin [N, rotary_dim]; the rest pass through."""
    rotary_dim = cos.shape[-1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    rotated = rotated * cos + rotate_half(rotated) * sin
    return torch.cat((rotated, passed), dim=-1)
