"""Triton gated delta rule kernels (decode and packed prefill) against the torch reference.

Gates come in raw (a, b, A_log, dt_bias) and the state lives in a slot pool: the reference sees
g, beta computed in torch and the gathered states. Slots left out of a call must stay bit-equal.
"""
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from qwen35.runtime.kernels.gated_delta_rule.reference import (  # noqa: E402
    chunk_gated_delta_rule,
    recurrent_gated_delta_rule,
)
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


def gates(x):
    g = -x["A_log"].exp() * F.softplus(x["a"].float() + x["dt_bias"])
    return g, x["b"].float().sigmoid()


# Real head size (128) in fp32; bf16 runs a smaller head to keep the interpreter quick.
@pytest.mark.parametrize("dtype,dim", [(torch.float32, 128), (torch.bfloat16, 32)])
def test_decode_matches_recurrent_reference(dtype, dim, device):
    x = make_inputs(5, 1, 2, dim, 9, dtype, device, seed=0)
    slots = torch.tensor([7, 2, -1, 0, 5], dtype=torch.int32, device=device)  # -1: padding row
    pool = x["pool"].clone()
    out = torch.full((5, 2, dim), math.nan, dtype=dtype, device=device)
    fused_recurrent_gated_delta_rule_update(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"],
                                            pool, slots, out=out)

    live = [0, 1, 3, 4]
    g, beta = gates(x)
    ref, ref_state = recurrent_gated_delta_rule(
        x["q"][live, None], x["k"][live, None], x["v"][live, None], g[live, None], beta[live, None],
        initial_state=x["pool"][slots[live].long()])
    assert not out.isnan().any()
    assert rel_err(out[live], ref[:, 0]) < TOLERANCE[dtype]
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    assert rel_err(pool[slots[live].long()], ref_state) < TOLERANCE[dtype]
    untouched = [1, 3, 4, 6, 8]
    assert torch.equal(pool[untouched], x["pool"][untouched])


@pytest.mark.parametrize("dtype,dim,lengths,slots", [
    (torch.float32, 128, [1, 63, 64, 65, 130], [6, 0, 3, -1, 1]),  # -1: no state in or out
    (torch.bfloat16, 64, [63, 1, 130], [2, 6, 0]),
])
def test_prefill_matches_chunked_reference_per_sequence(dtype, dim, lengths, slots, device):
    x = make_inputs(sum(lengths), 1, 2, dim, 8, dtype, device, seed=1)
    slots = torch.tensor(slots, dtype=torch.int32, device=device)
    cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    pool = x["pool"].clone()
    out = torch.full((sum(lengths), 2, dim), math.nan, dtype=dtype, device=device)
    chunk_gated_delta_rule_varlen(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"],
                                  cu, pool, slots, out=out)

    assert not out.isnan().any()
    g, beta = gates(x)
    for i, slot in enumerate(slots.tolist()):
        part = slice(int(cu[i]), int(cu[i + 1]))
        initial = x["pool"][slot][None] if slot >= 0 else None
        ref, ref_state = chunk_gated_delta_rule(x["q"][None, part], x["k"][None, part], x["v"][None, part],
                                                g[None, part], beta[None, part], initial_state=initial)
        assert rel_err(out[part], ref[0]) < TOLERANCE[dtype], f"sequence of {lengths[i]} tokens"
        if slot >= 0:
            assert rel_err(pool[slot], ref_state[0]) < TOLERANCE[dtype], f"state after {lengths[i]} tokens"
    untouched = [i for i in range(8) if i not in slots.tolist()]
    assert torch.equal(pool[untouched], x["pool"][untouched])


def test_prefill_then_decode_equals_one_prefill(device):
    """Two prefill calls and a decode step through the pool compose like one call over all tokens."""
    x = make_inputs(70, 1, 3, 64, 2, torch.float32, device, seed=2)
    cu = lambda *bounds: torch.tensor(bounds, dtype=torch.int32, device=device)  # noqa: E731
    slot = torch.tensor([1], dtype=torch.int32, device=device)
    args = lambda part: [x[n][part] for n in ("q", "k", "v", "a", "b")] + [x["A_log"], x["dt_bias"]]  # noqa: E731

    whole_pool = x["pool"].clone()
    whole = chunk_gated_delta_rule_varlen(*args(slice(0, 70)), cu(0, 70), whole_pool, slot)
    pool = x["pool"].clone()
    first = chunk_gated_delta_rule_varlen(*args(slice(0, 41)), cu(0, 41), pool, slot)
    second = chunk_gated_delta_rule_varlen(*args(slice(41, 69)), cu(0, 28), pool, slot)
    last = fused_recurrent_gated_delta_rule_update(*args(slice(69, 70)), pool, slot)
    assert rel_err(torch.cat([first, second, last]), whole) < 1e-5
    assert rel_err(pool[1], whole_pool[1]) < 1e-5
    assert torch.equal(pool[0], x["pool"][0])


def test_rejects_a_low_precision_state_pool(device):
    x = make_inputs(2, 1, 1, 16, 2, torch.float32, device, seed=3)
    with pytest.raises(ValueError, match="fp32"):
        fused_recurrent_gated_delta_rule_update(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"],
                                                x["pool"].bfloat16(), torch.tensor([0, 1], device=device))
