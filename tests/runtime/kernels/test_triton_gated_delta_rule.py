"""Triton gated delta rule kernels (decode and packed prefill) against the torch reference.

Kernel and reference get the same arguments (raw gates a, b, A_log, dt_bias; states in a slot
pool through slot ids), each its own copy of the pool. Slots left out of a call must stay bit-equal.
"""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.gated_delta_rule import reference  # noqa: E402
from qwen35.runtime.kernels.gated_delta_rule.triton_decode import (  # noqa: E402
    fused_recurrent_gated_delta_rule_update,
)
from qwen35.runtime.kernels.gated_delta_rule.triton_prefill import chunk_gated_delta_rule_varlen  # noqa: E402

# fp32: two fp32 algorithms (the reference solves the chunk system with solve_triangular, the
# kernel inverts it by blocks) differ by ~1e-5 on strongly decayed states; against a float64
# recurrence the kernel is the closer of the two. bf16: inputs and intermediates rounded.
TOLERANCE = {torch.float32: 5e-5, torch.bfloat16: 2e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make_inputs(tokens, num_k_heads, num_v_heads, dim, num_slots, dtype, device, seed):
    """q, k, v as views into one conv-output row per token, as the model slices them."""
    gen = torch.Generator().manual_seed(seed)
    mixed = torch.randn(tokens, (2 * num_k_heads + num_v_heads) * dim, generator=gen)
    key_dim = num_k_heads * dim
    raw = dict(
        a=torch.randn(tokens, num_v_heads, generator=gen),
        b=torch.randn(tokens, num_v_heads, generator=gen),
        A_log=torch.empty(num_v_heads).uniform_(0, 16, generator=gen).log(),
        dt_bias=torch.rand(num_v_heads, generator=gen),
        pool=torch.randn(num_slots, num_v_heads, dim, dim, generator=gen) * 0.1,
    )
    mixed = mixed.to(device, dtype)
    x = {k: v.to(device, dtype if k in "ab" else torch.float32) for k, v in raw.items()}
    x["q"] = mixed[:, :key_dim].view(tokens, num_k_heads, dim)
    x["k"] = mixed[:, key_dim:2 * key_dim].view(tokens, num_k_heads, dim)
    x["v"] = mixed[:, 2 * key_dim:].view(tokens, num_v_heads, dim)
    return x


def args(x, part=slice(None)):
    """The inputs before cu_seqlens / the pool: q, k, v, a, b (tokens `part`), A_log, dt_bias."""
    return [x[n][part] for n in ("q", "k", "v", "a", "b")] + [x["A_log"], x["dt_bias"]]


# Real head size (128) in fp32; bf16 runs a smaller head to keep the interpreter quick.
@pytest.mark.parametrize("dtype,dim", [(torch.float32, 128), (torch.bfloat16, 32)])
def test_decode_matches_reference(dtype, dim, device):
    x = make_inputs(5, 1, 2, dim, 9, dtype, device, seed=0)
    slots = torch.tensor([7, 2, -1, 0, 5], dtype=torch.int32, device=device)  # -1: padding row
    pool, ref_pool = x["pool"].clone(), x["pool"].clone()
    out = torch.full((5, 2, dim), math.nan, dtype=dtype, device=device)
    fused_recurrent_gated_delta_rule_update(*args(x), pool, slots, out=out)
    ref = reference.fused_recurrent_gated_delta_rule_update(*args(x), ref_pool, slots)

    live = [0, 1, 3, 4]
    assert not out.isnan().any()
    assert rel_err(out[live], ref[live]) < TOLERANCE[dtype]
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    assert rel_err(pool[slots[live].long()], ref_pool[slots[live].long()]) < TOLERANCE[dtype]
    untouched = [1, 3, 4, 6, 8]
    assert torch.equal(pool[untouched], x["pool"][untouched])
    assert torch.equal(ref_pool[untouched], x["pool"][untouched])


@pytest.mark.parametrize("dtype,dim,lengths,slots", [
    (torch.float32, 128, [1, 63, 64, 65, 130], [6, 0, 3, -1, 1]),  # -1: no state in or out
    (torch.bfloat16, 64, [63, 1, 130], [2, 6, 0]),
])
def test_prefill_matches_reference_per_sequence(dtype, dim, lengths, slots, device):
    x = make_inputs(sum(lengths), 1, 2, dim, 8, dtype, device, seed=1)
    slots = torch.tensor(slots, dtype=torch.int32, device=device)
    cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    pool, ref_pool = x["pool"].clone(), x["pool"].clone()
    out = torch.full((sum(lengths), 2, dim), math.nan, dtype=dtype, device=device)
    chunk_gated_delta_rule_varlen(*args(x), cu, pool, slots, out=out)
    ref = reference.chunk_gated_delta_rule_varlen(*args(x), cu, ref_pool, slots)

    assert not out.isnan().any()
    for i, slot in enumerate(slots.tolist()):
        part = slice(int(cu[i]), int(cu[i + 1]))
        assert rel_err(out[part], ref[part]) < TOLERANCE[dtype], f"sequence of {lengths[i]} tokens"
        if slot >= 0:
            assert rel_err(pool[slot], ref_pool[slot]) < TOLERANCE[dtype], f"state after {lengths[i]} tokens"
    untouched = [i for i in range(8) if i not in slots.tolist()]
    assert torch.equal(pool[untouched], x["pool"][untouched])
    assert torch.equal(ref_pool[untouched], x["pool"][untouched])


def test_prefill_then_decode_equals_one_prefill(device):
    """Two prefill calls and a decode step through the pool compose like one call over all tokens."""
    x = make_inputs(70, 1, 3, 64, 2, torch.float32, device, seed=2)
    cu = lambda *bounds: torch.tensor(bounds, dtype=torch.int32, device=device)  # noqa: E731
    slot = torch.tensor([1], dtype=torch.int32, device=device)

    whole_pool = x["pool"].clone()
    whole = chunk_gated_delta_rule_varlen(*args(x, slice(0, 70)), cu(0, 70), whole_pool, slot)
    pool = x["pool"].clone()
    first = chunk_gated_delta_rule_varlen(*args(x, slice(0, 41)), cu(0, 41), pool, slot)
    second = chunk_gated_delta_rule_varlen(*args(x, slice(41, 69)), cu(0, 28), pool, slot)
    last = fused_recurrent_gated_delta_rule_update(*args(x, slice(69, 70)), pool, slot)
    assert rel_err(torch.cat([first, second, last]), whole) < 1e-5
    assert rel_err(pool[1], whole_pool[1]) < 1e-5
    assert torch.equal(pool[0], x["pool"][0])


def test_rejects_a_low_precision_state_pool(device):
    x = make_inputs(2, 1, 1, 16, 2, torch.float32, device, seed=3)
    with pytest.raises(ValueError, match="fp32"):
        fused_recurrent_gated_delta_rule_update(*args(x), x["pool"].bfloat16(), torch.tensor([0, 1], device=device))
