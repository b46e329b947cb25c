"""SiLU-and-multiply in Triton: [T, 2I] (gate then up) -> [T, I], one read and one write.

The grid is (rows, column blocks); SiLU and the product run in fp32 with one rounding.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, inter, stride_x, stride_out, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(x[..., :I]) * x[..., I:] for x [..., 2I]; returns [..., I] in x's dtype."""
    if x.shape[-1] % 2:
        raise ValueError(f"last dimension ({x.shape[-1]}) must be even: gate and up halves")
    inter = x.shape[-1] // 2
    x2 = x.reshape(-1, x.shape[-1])
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    out = x.new_empty(*x.shape[:-1], inter) if out is None else out
    out2 = out.view(-1, inter)
    if x2.shape[0] == 0:
        return out
    block = min(_BLOCK, triton.next_power_of_2(inter))
    _silu_mul_kernel[(x2.shape[0], triton.cdiv(inter, block))](
        x2, out2, inter, x2.stride(0), out2.stride(0), BLOCK=block, num_warps=4)
    return out
