"""Triton speculative verify and commit (conv and gated delta rule) against the torch references.

Kernel and reference get the same arguments. Rows sit in non-contiguous pool slots; verify must
leave the whole pool bit-equal, commit must change exactly the rows' slots, to the reference
state after their accepted prefix.
"""
import math

import pytest
import torch

pytest.importorskip("triton")

from qwen35.runtime.kernels.causal_conv1d import reference as conv_reference  # noqa: E402
from qwen35.runtime.kernels.causal_conv1d.triton import causal_conv1d_verify  # noqa: E402
from qwen35.runtime.kernels.gated_delta_rule import reference  # noqa: E402
from qwen35.runtime.kernels.gated_delta_rule.triton_verify import (  # noqa: E402
    fused_recurrent_gated_delta_rule_commit,
    fused_recurrent_gated_delta_rule_verify,
)

SLOTS = [5, 0, 3]  # three rows, out of order, in a pool of 7 slots
NUM_SLOTS = 7
# fp32 throughout: kernel and reference run the same recurrence; relative errors measured below 2e-7.
TOLERANCE = 1e-5


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make_inputs(rows, length, num_k_heads, num_v_heads, dk, dv, device, seed):
    """q, k, v as views into one conv-output row per token ([rows, T, ...]), raw gates, a random state pool."""
    gen = torch.Generator().manual_seed(seed)
    key_dim = num_k_heads * dk
    mixed = torch.randn(rows, length, 2 * key_dim + num_v_heads * dv, generator=gen).to(device)
    x = dict(
        a=torch.randn(rows, length, num_v_heads, generator=gen),
        b=torch.randn(rows, length, num_v_heads, generator=gen),
        A_log=torch.empty(num_v_heads).uniform_(0, 16, generator=gen).log(),
        dt_bias=torch.rand(num_v_heads, generator=gen),
        pool=torch.randn(NUM_SLOTS, num_v_heads, dk, dv, generator=gen) * 0.1,
    )
    x = {name: value.to(device) for name, value in x.items()}
    x["q"] = mixed[..., :key_dim].view(rows, length, num_k_heads, dk)
    x["k"] = mixed[..., key_dim:2 * key_dim].view(rows, length, num_k_heads, dk)
    x["v"] = mixed[..., 2 * key_dim:].view(rows, length, num_v_heads, dv)
    return x


def args(x):
    return x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"]


SHAPES = [(2, 2, 4, 32, 32), (4, 2, 4, 32, 16), (4, 1, 3, 16, 16)]  # T, Hk, Hv, Dk, Dv


@pytest.mark.parametrize("length,num_k_heads,num_v_heads,dk,dv", SHAPES)
def test_verify_matches_the_reference_and_leaves_the_pool_alone(length, num_k_heads, num_v_heads, dk, dv, device):
    x = make_inputs(3, length, num_k_heads, num_v_heads, dk, dv, device, seed=length + dv)
    pool = x["pool"].clone()
    slots = torch.tensor(SLOTS, dtype=torch.int32, device=device)
    out = torch.full((3, length, num_v_heads, dv), math.nan, device=device)
    fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots, out=out)
    ref = reference.fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots)

    assert not out.isnan().any()
    for row in range(3):
        assert rel_err(out[row], ref[row]) < TOLERANCE
    assert torch.equal(pool, x["pool"])  # bit-equal: nothing written


def test_padding_row_is_zero_and_its_pool_is_never_touched(device):
    x = make_inputs(3, 2, 2, 4, 16, 16, device, seed=1)
    pool, ref_pool = x["pool"].clone(), x["pool"].clone()
    slots = torch.tensor([2, -1, 6], dtype=torch.int32, device=device)
    out = torch.full((3, 2, 4, 16), math.nan, device=device)
    fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots, out=out)
    ref = reference.fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    for row in (0, 2):
        assert rel_err(out[row], ref[row]) < TOLERANCE
    assert torch.equal(pool, x["pool"])

    accepted = torch.tensor([2, 2, 1], dtype=torch.int32, device=device)
    fused_recurrent_gated_delta_rule_commit(*args(x), pool, slots, accepted)
    reference.fused_recurrent_gated_delta_rule_commit(*args(x), ref_pool, slots, accepted)
    for slot in (2, 6):
        assert rel_err(pool[slot], ref_pool[slot]) < TOLERANCE
    untouched = [0, 1, 3, 4, 5]
    assert torch.equal(pool[untouched], x["pool"][untouched])
    assert torch.equal(ref_pool[untouched], x["pool"][untouched])


@pytest.mark.parametrize("length,num_k_heads,num_v_heads,dk,dv", SHAPES)
def test_commit_leaves_each_slot_at_its_accepted_prefix(length, num_k_heads, num_v_heads, dk, dv, device):
    x = make_inputs(3, length, num_k_heads, num_v_heads, dk, dv, device, seed=10 + length + dv)
    pool, ref_pool = x["pool"].clone(), x["pool"].clone()
    slots = torch.tensor(SLOTS, dtype=torch.int32, device=device)
    accepted = torch.tensor([1, length, 2], dtype=torch.int64, device=device)
    fused_recurrent_gated_delta_rule_commit(*args(x), pool, slots, accepted)
    reference.fused_recurrent_gated_delta_rule_commit(*args(x), ref_pool, slots, accepted)

    assert not pool.isnan().any()
    for slot in SLOTS:
        assert rel_err(pool[slot], ref_pool[slot]) < TOLERANCE
    untouched = [s for s in range(NUM_SLOTS) if s not in SLOTS]
    assert torch.equal(pool[untouched], x["pool"][untouched])
    assert torch.equal(ref_pool[untouched], x["pool"][untouched])


def test_verify_then_commit_of_everything_equals_the_last_verify_state(device):
    """Commit with accepted = T: the state whose output verify gave for the last token (o = S^T q)."""
    x = make_inputs(3, 4, 2, 4, 32, 32, device, seed=5)
    pool = x["pool"].clone()
    slots = torch.tensor(SLOTS, dtype=torch.int32, device=device)
    out = fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots)
    fused_recurrent_gated_delta_rule_commit(*args(x), pool, slots, torch.full((3,), 4, device=device))
    # Decode from the committed state with q of the last token and zero-strength update: o = S^T q.
    q = x["q"][:, -1].float()
    q = q * torch.rsqrt(q.square().sum(-1, keepdim=True) + 1e-6) * 32 ** -0.5
    q = q.repeat_interleave(2, dim=1)
    expected = torch.einsum("bhkv,bhk->bhv", pool[SLOTS], q)
    assert rel_err(out[:, -1], expected) < TOLERANCE


@pytest.mark.parametrize("length,slots", [(2, SLOTS), (4, SLOTS), (3, [6, -1, 1])])  # -1: a padding row
def test_conv_verify_matches_the_reference_and_leaves_the_pool_alone(length, slots, device):
    dim = 200  # not a multiple of the 128-channel block
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(3, length, dim + 56, generator=gen).to(device)[..., :dim]  # a view, as q/k/v's source is
    weight = torch.randn(dim, 4, generator=gen).to(device)
    conv_pool = torch.randn(NUM_SLOTS, dim, 3, generator=gen).to(device)
    saved = conv_pool.clone()
    slots = torch.tensor(slots, dtype=torch.int32, device=device)
    out, window = causal_conv1d_verify(x, weight, conv_pool, slots)
    ref, ref_window = conv_reference.causal_conv1d_verify(x, weight, conv_pool, slots)

    assert not out.isnan().any() and not window.isnan().any()
    assert rel_err(out, ref) < TOLERANCE
    live = slots >= 0
    assert torch.equal(out[~live], torch.zeros_like(out[~live]))
    # The window holds raw inputs: [old state (zeros for padding) | the T inputs], bit-equal.
    history = conv_pool[slots.long().clamp(min=0)] * live[:, None, None]
    assert torch.equal(window, torch.cat([history, x.transpose(1, 2)], dim=-1))
    assert torch.equal(window, ref_window)
    assert torch.equal(conv_pool, saved)
