"""Triton causal conv1d (packed prefill and one-step update) against the torch reference, through a state pool.

Kernel and reference get the same arguments, each its own copy of the pool."""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.causal_conv1d import reference  # noqa: E402
from qwen35.runtime.kernels.causal_conv1d.triton import (  # noqa: E402
    causal_conv1d_update as triton_update,
    causal_conv1d_varlen,
)

TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 1e-2}
DIM = 300  # not a multiple of the 128-channel block


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(tokens, num_slots, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, DIM + 17, generator=gen)[:, 17:]  # a strided view, as out of a projection
    weight = torch.randn(DIM, 4, generator=gen) * 0.5
    pool = torch.randn(num_slots, DIM, 3, generator=gen)
    return x.to(device, dtype), weight.to(device, dtype), pool.to(device, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_prefill_matches_reference_per_sequence(dtype, device):
    lengths = [1, 2, 63, 64, 65]
    x, weight, pool0 = make(sum(lengths), 8, dtype, device, seed=0)
    slots = torch.tensor([5, 0, 7, -1, 2], dtype=torch.int32, device=device)  # -1: zero history, not saved
    cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    pool, ref_pool = pool0.clone(), pool0.clone()
    out = torch.full((sum(lengths), DIM), math.nan, dtype=dtype, device=device)
    causal_conv1d_varlen(x, weight, cu, pool, slots, out=out)
    ref = reference.causal_conv1d_varlen(x, weight, cu, ref_pool, slots)

    assert not out.isnan().any()
    for i in range(len(lengths)):
        part = slice(int(cu[i]), int(cu[i + 1]))
        assert rel_err(out[part], ref[part]) < TOLERANCE[dtype], f"sequence of {lengths[i]} tokens"
    # The state holds raw inputs: copied, never rounded, so the whole pool is bit-equal.
    assert torch.equal(pool, ref_pool)
    untouched = [1, 3, 4, 6]
    assert torch.equal(pool[untouched], pool0[untouched])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_matches_reference(dtype, device):
    x, weight, pool0 = make(5, 9, dtype, device, seed=1)
    slots = torch.tensor([4, -1, 0, 8, 2], dtype=torch.int32, device=device)
    pool, ref_pool = pool0.clone(), pool0.clone()
    out = torch.full((5, DIM), math.nan, dtype=dtype, device=device)
    triton_update(x, weight, pool, slots, out=out)
    ref = reference.causal_conv1d_update(x, weight, ref_pool, slots)

    live = [0, 2, 3, 4]
    assert not out.isnan().any()
    assert rel_err(out[live], ref[live]) < TOLERANCE[dtype]
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(ref[1], torch.zeros_like(ref[1]))
    assert torch.equal(pool, ref_pool)
    untouched = [1, 3, 5, 6, 7]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_update_steps_continue_a_prefill(device):
    x, weight, pool0 = make(40, 2, torch.float32, device, seed=2)
    slot = torch.tensor([1], dtype=torch.int32, device=device)
    whole_pool, pool = pool0.clone(), pool0.clone()
    whole = causal_conv1d_varlen(x, weight, torch.tensor([0, 40], dtype=torch.int32, device=device), whole_pool, slot)
    first = causal_conv1d_varlen(x[:37], weight, torch.tensor([0, 37], dtype=torch.int32, device=device), pool, slot)
    steps = [triton_update(x[t:t + 1], weight, pool, slot) for t in range(37, 40)]
    assert rel_err(torch.cat([first, *steps]), whole) < 1e-6
    assert torch.equal(pool, whole_pool)
