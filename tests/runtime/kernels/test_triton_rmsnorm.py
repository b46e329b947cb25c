"""Triton RMSNorm with (1 + w) weights, alone and fused with the residual add, against the reference."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.rmsnorm import reference  # noqa: E402
from qwen35.runtime.kernels.rmsnorm import triton as fused  # noqa: E402

TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rmsnorm_matches_reference(dtype, device):
    gen = torch.Generator().manual_seed(0)
    x, residual = (torch.randn(63, 1000, generator=gen).to(device, dtype) for _ in range(2))
    weight = (torch.randn(1000, generator=gen) * 0.1).to(device, dtype)
    out = torch.full_like(x, math.nan)
    new_residual = torch.full_like(x, math.nan)
    fused.add_rmsnorm(x, residual, weight, 1e-6, out=out, residual_out=new_residual)
    ref, ref_residual = reference.add_rmsnorm(x, residual, weight, 1e-6)
    assert not out.isnan().any() and not new_residual.isnan().any()
    assert rel_err(out, ref) < TOLERANCE[dtype]
    # bf16: the interpreter rounds fp32 -> bf16 by truncation, torch to nearest.
    assert rel_err(new_residual, ref_residual) < (0 if dtype == torch.float32 else 1e-2) + 1e-7


def test_add_rmsnorm_in_place_residual(device):
    gen = torch.Generator().manual_seed(1)
    x, residual = (torch.randn(5, 256, generator=gen).to(device) for _ in range(2))
    weight = torch.randn(256, generator=gen).to(device)
    ref, ref_residual = reference.add_rmsnorm(x, residual, weight, 1e-6)
    out, new_residual = fused.add_rmsnorm(x, residual, weight, 1e-6, residual_out=residual)
    assert new_residual is residual
    assert torch.equal(residual, ref_residual)
    assert rel_err(out, ref) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_over_heads_of_a_strided_view(dtype, device):
    """q_norm / k_norm: rows of head_dim 256 taken out of a wider projection output."""
    gen = torch.Generator().manual_seed(2)
    wide = torch.randn(63, 3, 512, generator=gen).to(device, dtype)
    x = wide[..., :256]
    weight = (torch.randn(256, generator=gen) * 0.1).to(device, dtype)
    out = fused.rmsnorm(x, weight, 1e-6)
    assert out.shape == x.shape and not out.isnan().any()
    assert rel_err(out, reference.rmsnorm(x, weight, 1e-6)) < TOLERANCE[dtype]
