"""The causal conv1d references (packed prefill, one-step update, verify) against a naive sliding-window sum.

Every call goes through a state pool larger than the batch, with the slots out of order and a
padding slot (-1) among them: live slots must end at the naive state, the others bit-equal.
"""
import math

import torch

from qwen35.runtime.kernels.causal_conv1d import causal_conv1d_update, causal_conv1d_varlen, causal_conv1d_verify


def naive_conv(x, weight, history):
    """out[t, d] = silu(sum_j w[d, j] * xs[t + j, d]) over xs = history followed by x."""
    batch, length, dim = x.shape
    width = weight.shape[1]
    xs = torch.cat([history.transpose(1, 2), x], dim=1).double()
    out = torch.empty(batch, length, dim, dtype=torch.float64)
    for t in range(length):
        window = xs[:, t:t + width]  # [B, K, D]
        out[:, t] = (window * weight.double().T[None]).sum(1)
    return torch.nn.functional.silu(out), xs[:, -(width - 1):].transpose(1, 2)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make(tokens, dim, num_slots, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, dim, generator=gen), torch.randn(dim, 4, generator=gen),
            torch.randn(num_slots, dim, 3, generator=gen))


def history_of(pool, slot):
    """A slot's conv state [1, D, K-1], zeros for padding."""
    return pool[slot][None] if slot >= 0 else torch.zeros(1, *pool.shape[1:])


def test_varlen_prefill_matches_naive_per_sequence():
    lengths = [63, 1, 2, 17, 2]  # shorter than the window too: old columns shift along
    slots = [6, 0, -1, 3, 8]
    x, weight, pool0 = make(sum(lengths), 37, 9, seed=0)
    cu = torch.tensor([0] + lengths).cumsum(0)
    pool = pool0.clone()
    out = torch.full_like(x, math.nan)
    causal_conv1d_varlen(x, weight, cu, pool, torch.tensor(slots), out=out)

    assert not out.isnan().any()
    for i, slot in enumerate(slots):
        part = slice(int(cu[i]), int(cu[i + 1]))
        expected, expected_state = naive_conv(x[None, part], weight, history_of(pool0, slot))
        assert rel_err(out[part], expected[0]) < 1e-6, f"sequence of {lengths[i]} tokens"
        if slot >= 0:  # the state holds raw inputs: copied, never rounded
            assert torch.equal(pool[slot], expected_state[0].float()), f"state after {lengths[i]} tokens"
    untouched = [1, 2, 4, 5, 7]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_update_matches_naive():
    slots = torch.tensor([4, -1, 0, 8, 2])  # odd batch, one padding row
    x, weight, pool0 = make(5, 11, 9, seed=1)
    pool = pool0.clone()
    out = torch.full_like(x, math.nan)
    causal_conv1d_update(x, weight, pool, slots, out=out)

    live = [0, 2, 3, 4]
    expected, expected_state = naive_conv(x[live, None], weight, pool0[slots[live]])
    assert not out.isnan().any()
    assert rel_err(out[live], expected[:, 0]) < 1e-6
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(pool[slots[live]], expected_state.float())
    untouched = [1, 3, 5, 6, 7]
    assert torch.equal(pool[untouched], pool0[untouched])


def test_update_steps_continue_a_prefill():
    x, weight, pool0 = make(40, 11, 3, seed=2)
    slot = torch.tensor([2])
    whole_pool, pool = pool0.clone(), pool0.clone()
    whole = causal_conv1d_varlen(x, weight, torch.tensor([0, 40]), whole_pool, slot)
    first = causal_conv1d_varlen(x[:37], weight, torch.tensor([0, 37]), pool, slot)
    steps = [causal_conv1d_update(x[t:t + 1], weight, pool, slot) for t in range(37, 40)]
    assert rel_err(torch.cat([first, *steps]), whole) < 1e-6
    assert torch.equal(pool, whole_pool)


def test_verify_matches_naive_and_leaves_the_pool_alone():
    slots = torch.tensor([5, -1, 0])
    x, weight, pool0 = make(3 * 4, 13, 7, seed=3)
    x = x.view(3, 4, 13)
    pool = pool0.clone()
    out, window = causal_conv1d_verify(x, weight, pool, slots)

    live = [0, 2]
    expected, _ = naive_conv(x[live], weight, pool0[slots[live]])
    assert out.shape == x.shape and window.shape == (3, 13, 3 + 4)
    assert not out.isnan().any()
    assert rel_err(out[live], expected) < 1e-6
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    history = torch.stack([history_of(pool0, s)[0] for s in slots.tolist()])
    assert torch.equal(window, torch.cat([history, x.transpose(1, 2)], dim=-1))
    for accepted in range(1, 5):  # the conv state after `accepted` tokens is window[..., a : a + 3]
        _, state = naive_conv(x[live, :accepted], weight, pool0[slots[live]])
        assert torch.equal(window[live, :, accepted:accepted + 3], state.float())
    assert torch.equal(pool, pool0)


def test_matches_transformers_reference():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    x, weight, pool = make(3 * 63, 24, 1, seed=4)
    x = x.view(3, 63, 24)
    expected = hf.causal_conv1d_fn(x.transpose(1, 2), weight, None, activation="silu").transpose(1, 2)
    out = causal_conv1d_varlen(x.reshape(-1, 24), weight, torch.tensor([0, 63, 126, 189]), pool,
                               torch.tensor([-1, -1, -1]))  # no history: zero-padded, as transformers
    assert rel_err(out.view(3, 63, 24), expected) < 1e-6
