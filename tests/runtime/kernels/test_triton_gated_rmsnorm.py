"""Triton gated RMSNorm (rmsnorm(x) * w * silu(z), plain w) against the reference and transformers."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.gated_rmsnorm import reference  # noqa: E402
from qwen35.runtime.kernels.gated_rmsnorm import triton as fused  # noqa: E402

TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference(dtype, device):
    gen = torch.Generator().manual_seed(0)
    x, gate = (torch.randn(63, 3, 128, generator=gen).to(device, dtype) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(128, generator=gen)).to(device, dtype)
    out = torch.full_like(x, math.nan)
    fused.gated_rmsnorm(x, gate, weight, 1e-6, out=out)
    assert not out.isnan().any()
    assert rel_err(out, reference.gated_rmsnorm(x, gate, weight, 1e-6)) < TOLERANCE[dtype]


def test_reference_is_transformers_norm():
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5RMSNormGated

    gen = torch.Generator().manual_seed(1)
    x, gate = (torch.randn(7, 2, 128, generator=gen).bfloat16() for _ in range(2))
    norm = Qwen3_5RMSNormGated(128, eps=1e-6).bfloat16()
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(128, generator=gen))
        expected = norm(x, gate)
    assert torch.equal(reference.gated_rmsnorm(x, gate, norm.weight.detach(), 1e-6), expected)
