"""Depthwise causal conv1d in plain torch, with the Triton kernels' signatures.

Layout: tokens are rows, x [T, D] (packed sequences split by cu_seqlens) or [B, D] for one
decode step; weight [D, K] (the checkpoint's conv1d.weight [D, 1, K] squeezed); the conv state
of a sequence holds its last K-1 inputs, oldest first, in a pool [num_slots, D, K-1] addressed
by a per-sequence slot id. A negative slot is padding: prefill starts it from zero history and
keeps no state; a decode or verify row of it is zero and the pool is left alone. Computation
runs in the weight's dtype, as Qwen3.5's reference does.
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


def _conv(window: torch.Tensor, weight: torch.Tensor, activation: str | None) -> torch.Tensor:
    """[B, D, K-1+T] window (history, then the T inputs) -> [B, T, D] outputs."""
    out = F.conv1d(window, weight.unsqueeze(1), groups=window.shape[1])
    return _activate(out, activation).transpose(1, 2)


def _history(state_pool: torch.Tensor, slot: int, like: torch.Tensor) -> torch.Tensor:
    """A slot's conv state [D, K-1] in the compute dtype (zeros for padding)."""
    if slot < 0:
        return like.new_zeros(state_pool.shape[1:])
    return state_pool[slot].to(like.dtype)


def causal_conv1d_varlen(x: torch.Tensor, weight: torch.Tensor, cu_seqlens: torch.Tensor,
                         state_pool: torch.Tensor, slots: torch.Tensor, activation: str | None = "silu",
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Packed prefill: x [T, D] split by cu_seqlens [B+1]; reads and rewrites state_pool[slots[b]]."""
    out = torch.empty_like(x) if out is None else out
    bounds, width = cu_seqlens.tolist(), weight.shape[-1]
    for i, slot in enumerate(slots.tolist()):
        part = slice(bounds[i], bounds[i + 1])
        inputs = x[part].t().to(weight.dtype)
        window = torch.cat([_history(state_pool, slot, weight), inputs], dim=-1)[None]
        out[part] = _conv(window, weight, activation)[0].to(x.dtype)
        if slot >= 0:
            state_pool[slot] = window[0, :, window.shape[-1] - (width - 1):]
    return out


def causal_conv1d_update(x: torch.Tensor, weight: torch.Tensor, state_pool: torch.Tensor, slots: torch.Tensor,
                         activation: str | None = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """One decode step: x [B, D]; shifts state_pool[slots[b]] in place; returns [B, D]."""
    live = slots >= 0
    index = slots.long().clamp(min=0)
    history = state_pool.index_select(0, index).to(weight.dtype)
    window = torch.cat([history, x.to(weight.dtype)[:, :, None]], dim=-1)  # [B, D, K]
    result = _activate((window * weight).sum(dim=-1), activation)
    result = torch.where(live[:, None], result, torch.zeros_like(result)).to(x.dtype)
    if bool(live.any()):
        state_pool.index_copy_(0, index[live], window[live, :, 1:].to(state_pool.dtype))
    if out is None:
        return result
    out.copy_(result)
    return out


def causal_conv1d_verify(x: torch.Tensor, weight: torch.Tensor, conv_pool: torch.Tensor, slots: torch.Tensor,
                         activation: str | None = "silu") -> tuple[torch.Tensor, torch.Tensor]:
    """Conv of x [B, T, D] after conv_pool[slots[b]] (not written): (out [B, T, D], window [B, D, K-1+T]).

    The window is [old state | T inputs] in the pool's dtype: after a tokens the new conv state is
    window[:, :, a : a + K-1].
    """
    live = slots >= 0
    history = conv_pool.index_select(0, slots.long().clamp(min=0)) * live[:, None, None]
    window = torch.cat([history.to(weight.dtype), x.transpose(1, 2).to(weight.dtype)], dim=-1)
    result = _conv(window, weight, activation) * live[:, None, None]
    return result.to(x.dtype).contiguous(), window.to(conv_pool.dtype)
