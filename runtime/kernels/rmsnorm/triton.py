"""RMSNorm with (1 + w) weights in Triton, optionally fused with the residual add.

One pass over each row: (x + residual) is formed in fp32, rounded to the activation dtype and
written as the new residual stream (what the unfused decoder keeps), then the rounded sum is
normalised. Small rows (q_norm / k_norm over head_dim 256) are packed several to a program.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements one program holds at most when packing several short rows together.
_ROW_PACK_ELEMENTS = 4096


@triton.jit
def _rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_rows, dim,
                    stride_x, stride_res, stride_out, stride_res_out, eps,
                    HAS_RESIDUAL: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < dim)
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(x_ptr + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + rows64 * stride_res + cols[None, :], mask=mask, other=0.0)
        # Round the sum to the stream's dtype first: the norm sees exactly the stored residual.
        x = (x.to(tl.float32) + res.to(tl.float32)).to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + rows64 * stride_res_out + cols[None, :], x, mask=mask)
    x32 = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x32 * x32, axis=1) / dim + eps)
    w = tl.load(w_ptr + cols, mask=cols < dim, other=0.0).to(tl.float32)
    out = x32 * inv_rms[:, None] * (1.0 + w[None, :])
    tl.store(out_ptr + rows64 * stride_out + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[..., D] as a 2D [N, D] view (a copy only when the last dim is strided)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _launch(x, residual, weight, eps, out, residual_out):
    dim = x.shape[-1]
    x2 = _rows(x)
    n_rows = x2.shape[0]
    out2 = out.view(-1, dim)
    block_d = triton.next_power_of_2(dim)
    block_rows = max(1, min(16, _ROW_PACK_ELEMENTS // block_d))
    if residual is None:
        res2 = res_out2 = x2
    else:
        res2, res_out2 = _rows(residual), residual_out.view(-1, dim)
    if n_rows == 0:
        return
    grid = (triton.cdiv(n_rows, block_rows),)
    _rmsnorm_kernel[grid](
        x2, res2, weight, out2, res_out2, n_rows, dim,
        x2.stride(0), res2.stride(0), out2.stride(0), res_out2.stride(0), eps,
        HAS_RESIDUAL=residual is not None, BLOCK_ROWS=block_rows, BLOCK_D=block_d,
        num_warps=8 if block_d >= 4096 else 4)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * (1 + w) over the last dimension, in one Triton pass."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    _launch(x, None, weight, eps, out, None)
    return out


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                out: torch.Tensor | None = None,
                residual_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(x + residual), x + residual) in one pass; residual_out may be `residual` itself."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    residual_out = (torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
                    if residual_out is None else residual_out)
    _launch(x, residual, weight, eps, out, residual_out)
    return out, residual_out
