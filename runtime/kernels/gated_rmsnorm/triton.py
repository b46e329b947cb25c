"""Gated RMSNorm in Triton: rmsnorm(x) * w * silu(z) per row of 128 (one linear value head).

Rows are independent and short, so each program takes a block of rows; the norm, the weight
and the SiLU gate are applied in fp32 and rounded once on the way out.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_ROW_PACK_ELEMENTS = 4096


@triton.jit
def _gated_rmsnorm_kernel(x_ptr, z_ptr, w_ptr, out_ptr, n_rows, dim, stride_x, stride_z, stride_out, eps,
                          BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < dim)
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(x_ptr + rows64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + rows64 * stride_z + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < dim, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=1) / dim + eps)
    out = x * inv_rms[:, None] * w[None, :] * (z * tl.sigmoid(z))
    tl.store(out_ptr + rows64 * stride_out + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def gated_rmsnorm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """rmsnorm(x) * w * silu(gate) over the last dimension; output in x's dtype and shape."""
    if gate.shape != x.shape:
        raise ValueError(f"gate shape {tuple(gate.shape)} must match x {tuple(x.shape)}")
    dim = x.shape[-1]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    x2, z2, out2 = _rows(x), _rows(gate), out.view(-1, dim)
    n_rows = x2.shape[0]
    if n_rows == 0:
        return out
    block_d = triton.next_power_of_2(dim)
    block_rows = max(1, min(32, _ROW_PACK_ELEMENTS // block_d))
    _gated_rmsnorm_kernel[(triton.cdiv(n_rows, block_rows),)](
        x2, z2, weight, out2, n_rows, dim, x2.stride(0), z2.stride(0), out2.stride(0), eps,
        BLOCK_ROWS=block_rows, BLOCK_D=block_d, num_warps=4)
    return out
