"""Depthwise causal conv1d in plain torch, with the conv state carried between calls.

Layout: activations are token-major, x [B, T, D]; weight [D, K] (the checkpoint's
conv1d.weight [D, 1, K] squeezed); the state holds the last K-1 inputs, [B, D, K-1]
(oldest first). Computation runs in the weight's dtype, as Qwen3.5's reference does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation in ("silu", "swish"):
        return F.silu(x)
    raise ValueError(f"unsupported activation {activation!r}")


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv over x [B, T, D] after `initial_state`; returns (out, final state)."""
    batch, length, dim = x.shape
    width = weight.shape[-1]
    channels_first = x.transpose(1, 2).to(weight.dtype)
    if initial_state is None:
        history = channels_first.new_zeros(batch, dim, width - 1)
    else:
        history = initial_state.to(weight.dtype)
    window = torch.cat([history, channels_first], dim=-1)  # [B, D, K-1+T]
    out = F.conv1d(window, weight.unsqueeze(1), groups=dim)  # [B, D, T]
    final_state = window[:, :, window.shape[-1] - (width - 1):].clone()
    return _activate(out, activation).transpose(1, 2).to(x.dtype), final_state


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step: x [B, D] and state [B, D, K-1]; returns (out [B, D], new state)."""
    window = torch.cat([conv_state.to(weight.dtype), x.to(weight.dtype)[:, :, None]], dim=-1)  # [B, D, K]
    out = (window * weight).sum(dim=-1)
    return _activate(out, activation).to(x.dtype), window[:, :, 1:].clone()
