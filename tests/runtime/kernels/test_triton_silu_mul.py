"""Triton SiLU-and-multiply against the reference."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.silu_mul import reference  # noqa: E402
from qwen35.runtime.kernels.silu_mul import triton as fused  # noqa: E402

TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference(dtype, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(63, 2 * 1100, generator=gen).to(device, dtype)  # I = 1100: a partial last block
    out = torch.full((63, 1100), math.nan, dtype=dtype, device=device)
    fused.silu_mul(x, out=out)
    assert not out.isnan().any()
    assert rel_err(out, reference.silu_mul(x)) < TOLERANCE[dtype]


def test_rejects_odd_width(device):
    with pytest.raises(ValueError, match="even"):
        fused.silu_mul(torch.randn(2, 7, device=device))
