"""The gated delta rule references against a naive per-token loop written from the recurrence.

The references take what the Triton kernels take: raw gate projections a, b with A_log and
dt_bias (the naive loop gets g, beta from gdn_gates), packed tokens, and states in a slot pool
addressed by slot ids, slots out of order in a larger pool with a padding slot (-1) among them.
Live slots must end at the naive state and every other slot stay bit-equal.
"""
import math

import pytest
import torch

from qwen35.runtime.kernels.gated_delta_rule.reference import (
    chunk_gated_delta_rule_varlen,
    fused_recurrent_gated_delta_rule_commit,
    fused_recurrent_gated_delta_rule_update,
    fused_recurrent_gated_delta_rule_verify,
    gdn_gates,
)


def naive_gated_delta_rule(q, k, v, g, beta, state):
    """S <- exp(g) S; u = beta (v - S^T k); S <- S + k u^T; o = S^T q, one head and token at a time."""
    batch, length, num_k_heads, dk = k.shape
    num_v_heads = v.shape[2]
    out = torch.empty(batch, length, num_v_heads, v.shape[3], dtype=torch.float64)
    state = state.double().clone()
    for b in range(batch):
        for h in range(num_v_heads):
            kh = h // (num_v_heads // num_k_heads)
            for t in range(length):
                qt = q[b, t, kh].double()
                kt = k[b, t, kh].double()
                qt = qt / torch.sqrt((qt * qt).sum() + 1e-6) / dk**0.5
                kt = kt / torch.sqrt((kt * kt).sum() + 1e-6)
                s = state[b, h] * torch.exp(g[b, t, h].double())
                u = beta[b, t, h].double() * (v[b, t, h].double() - s.T @ kt)
                s = s + torch.outer(kt, u)
                state[b, h] = s
                out[b, t, h] = s.T @ qt
    return out, state


def random_inputs(lead, num_k_heads, num_v_heads, dk, dv, num_slots, seed=0):
    """q, k, v, raw a, b with leading dims `lead` ([T] packed, [B] decode, [B, T] verify), A_log, dt_bias, a pool."""
    gen = torch.Generator().manual_seed(seed)
    x = dict(
        q=torch.randn(*lead, num_k_heads, dk, generator=gen),
        k=torch.randn(*lead, num_k_heads, dk, generator=gen),
        v=torch.randn(*lead, num_v_heads, dv, generator=gen),
        a=torch.randn(*lead, num_v_heads, generator=gen),
        b=torch.randn(*lead, num_v_heads, generator=gen),
        # Real checkpoints: A = exp(A_log) in (0, 16], some heads barely decaying, some strongly.
        A_log=torch.empty(num_v_heads).uniform_(0, 16, generator=gen).log(),
        dt_bias=torch.rand(num_v_heads, generator=gen),
    )
    pool = torch.randn(num_slots, num_v_heads, dk, dv, generator=gen) * 0.5
    return x, pool


def args(x, part=slice(None)):
    """The positional inputs before the pool: q, k, v, a, b (sliced on their leading dim), A_log, dt_bias."""
    return [x[n][part] for n in ("q", "k", "v", "a", "b")] + [x["A_log"], x["dt_bias"]]


def naive(x, state, part=slice(None)):
    """The naive loop over [B, T, ...] inputs x[...][part], gates from gdn_gates."""
    q, k, v, a, b = (x[n][part] for n in ("q", "k", "v", "a", "b"))
    g, beta = gdn_gates(a, b, x["A_log"], x["dt_bias"])
    return naive_gated_delta_rule(q, k, v, g, beta, state)


def history_of(pool, slot):
    return pool[slot][None] if slot >= 0 else torch.zeros(1, *pool.shape[1:])


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_gates_are_qwen35s():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    A_log, dt_bias = torch.randn(4), torch.randn(4)
    g, beta = gdn_gates(a, b, A_log, dt_bias)
    assert g.dtype == torch.float32 and (g <= 0).all()
    assert torch.allclose(g, -A_log.exp() * torch.log1p((a + dt_bias).exp()))
    assert torch.allclose(beta, 1 / (1 + (-b).exp()))


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("heads", [(2, 2), (2, 4), (1, 3)])
def test_prefill_matches_naive_per_sequence(chunk_size, heads):
    lengths = [63, 1, 17, 2]
    slots = [5, 0, -1, 3]  # -1: zero initial state, nothing kept
    x, pool0 = random_inputs([sum(lengths)], *heads, 16, 8, num_slots=7, seed=sum(heads) + chunk_size)
    cu = torch.tensor([0] + lengths).cumsum(0)
    pool = pool0.clone()
    out = torch.full((sum(lengths), heads[1], 8), math.nan)
    chunk_gated_delta_rule_varlen(*args(x), cu, pool, torch.tensor(slots), out=out, chunk_size=chunk_size)

    assert out.dtype == torch.float32 and pool.dtype == torch.float32
    assert not out.isnan().any() and not pool.isnan().any()
    for i, slot in enumerate(slots):
        part = (None, slice(int(cu[i]), int(cu[i + 1])))
        expected, expected_state = naive(x, history_of(pool0, slot), part)
        assert rel_err(out[part[1]], expected[0]) < 1e-5, f"sequence of {lengths[i]} tokens"
        if slot >= 0:
            assert rel_err(pool[slot], expected_state[0]) < 1e-5, f"state after {lengths[i]} tokens"
    untouched = [1, 2, 4, 6]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_decode_matches_naive():
    slots = torch.tensor([4, -1, 0, 6, 2])  # odd batch, one padding row
    x, pool0 = random_inputs([5], 2, 4, 16, 8, num_slots=7, seed=1)
    pool = pool0.clone()
    out = torch.full((5, 4, 8), math.nan)
    fused_recurrent_gated_delta_rule_update(*args(x), pool, slots, out=out)

    live = [0, 2, 3, 4]
    expected, expected_state = naive(x, pool0[slots[live]], (live, None))
    assert not out.isnan().any()
    assert rel_err(out[live], expected[:, 0]) < 1e-5
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert rel_err(pool[slots[live]], expected_state) < 1e-5
    untouched = [1, 3, 5]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_prefill_then_decode_equals_one_prefill():
    """Two prefill calls and a decode step through the pool compose like one call over all tokens."""
    x, pool0 = random_inputs([70], 2, 4, 16, 8, num_slots=3, seed=2)
    slot = torch.tensor([1])
    whole_pool, pool = pool0.clone(), pool0.clone()
    whole = chunk_gated_delta_rule_varlen(*args(x), torch.tensor([0, 70]), whole_pool, slot)
    first = chunk_gated_delta_rule_varlen(*args(x, slice(0, 41)), torch.tensor([0, 41]), pool, slot)
    second = chunk_gated_delta_rule_varlen(*args(x, slice(41, 69)), torch.tensor([0, 28]), pool, slot,
                                           chunk_size=16)
    last = fused_recurrent_gated_delta_rule_update(*args(x, slice(69, 70)), pool, slot)
    assert rel_err(torch.cat([first, second, last]), whole) < 1e-5
    assert rel_err(pool[1], whole_pool[1]) < 1e-5
    assert torch.equal(pool[[0, 2]], pool0[[0, 2]])


def test_verify_matches_naive_and_leaves_the_pool_alone():
    slots = torch.tensor([5, -1, 0])
    x, pool0 = random_inputs([3, 4], 1, 3, 16, 8, num_slots=7, seed=3)
    pool = pool0.clone()
    out = fused_recurrent_gated_delta_rule_verify(*args(x), pool, slots)

    live = [0, 2]
    expected, _ = naive(x, pool0[slots[live]], live)
    assert out.shape == (3, 4, 3, 8) and not out.isnan().any()
    assert rel_err(out[live], expected) < 1e-5
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(pool, pool0)


def test_commit_leaves_each_slot_at_its_accepted_prefix():
    slots = torch.tensor([5, 0, -1, 3, 6])
    accepted = [1, 4, 2, 0, 3]
    x, pool0 = random_inputs([5, 4], 2, 4, 16, 8, num_slots=7, seed=4)
    pool = pool0.clone()
    fused_recurrent_gated_delta_rule_commit(*args(x), pool, slots, torch.tensor(accepted))

    assert not pool.isnan().any()
    for row, (slot, count) in enumerate(zip(slots.tolist(), accepted)):
        if slot >= 0:
            _, expected_state = naive(x, pool0[slot][None], (slice(row, row + 1), slice(0, count)))
            assert rel_err(pool[slot], expected_state[0]) < 1e-5, f"row {row}, {count} accepted"
    assert torch.equal(pool[3], pool0[3])  # accepted 0: unchanged
    untouched = [1, 2, 4]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_verify_then_commit_equals_decoding_the_accepted_tokens_one_by_one():
    slots = torch.tensor([2, 6, -1, 0, 4])
    accepted = torch.tensor([0, 1, 3, 4, 2])
    x, pool0 = random_inputs([5, 4], 2, 4, 16, 8, num_slots=7, seed=5)
    verified_pool = pool0.clone()
    verified = fused_recurrent_gated_delta_rule_verify(*args(x), verified_pool, slots)
    fused_recurrent_gated_delta_rule_commit(*args(x), verified_pool, slots, accepted)

    # Decode token t of every row that accepted it; the others ride along as padding rows.
    decoded_pool = pool0.clone()
    for t in range(4):
        step_slots = torch.where(t < accepted, slots, -1)
        out = fused_recurrent_gated_delta_rule_update(*args(x, (slice(None), t)), decoded_pool, step_slots)
        rows = (step_slots >= 0).nonzero()[:, 0]
        if len(rows):
            assert rel_err(out[rows], verified[rows, t]) < 1e-6, f"token {t}"
    assert rel_err(verified_pool, decoded_pool) < 1e-6
    assert torch.equal(verified_pool[[1, 2, 3, 5]], pool0[[1, 2, 3, 5]])  # [1, 3, 5] unused, 2 accepted 0


def test_low_precision_inputs_keep_fp32_state():
    x, pool0 = random_inputs([63], 2, 4, 16, 8, num_slots=2, seed=6)
    expected, expected_state = naive(x, pool0[1:], None)
    low = {n: t.bfloat16() if n in "qkvab" else t for n, t in x.items()}
    pool = pool0.clone()
    out = chunk_gated_delta_rule_varlen(*args(low), torch.tensor([0, 63]), pool, torch.tensor([1]))
    assert out.dtype == torch.bfloat16 and pool.dtype == torch.float32
    assert not out.isnan().any()
    assert rel_err(out, expected[0]) < 3e-2
    assert rel_err(pool[1], expected_state[0]) < 3e-2
    assert torch.equal(pool[0], pool0[0])


def test_matches_transformers_reference():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    x, pool0 = random_inputs([3, 63], 2, 4, 16, 8, num_slots=4, seed=7)
    slots = torch.tensor([3, 0, 2])
    g, beta = gdn_gates(x["a"], x["b"], x["A_log"], x["dt_bias"])
    expected, expected_state = hf.torch_chunk_gated_delta_rule(
        x["q"], x["k"], x["v"], g=g, beta=beta, initial_state=pool0[slots], output_final_state=True,
        use_qk_l2norm_in_kernel=True)
    packed = {n: t.flatten(0, 1) if n in "qkvab" else t for n, t in x.items()}
    pool = pool0.clone()
    out = chunk_gated_delta_rule_varlen(*args(packed), torch.tensor([0, 63, 126, 189]), pool, slots)
    assert rel_err(out.view(3, 63, 4, 8), expected) < 1e-5
    assert rel_err(pool[slots], expected_state) < 1e-5
