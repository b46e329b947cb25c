"""Causal conv1d kernels against a naive sliding-window sum."""
import torch

from qwen35.runtime.kernels.causal_conv1d import causal_conv1d, causal_conv1d_update


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


def test_prefill_with_initial_state_matches_naive():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 63, 37, generator=gen)
    weight = torch.randn(37, 4, generator=gen)
    history = torch.randn(3, 37, 3, generator=gen)
    expected, expected_state = naive_conv(x, weight, history)
    out, state = causal_conv1d(x, weight, initial_state=history)
    assert out.shape == x.shape and state.shape == (3, 37, 3)
    assert not out.isnan().any()
    assert rel_err(out, expected) < 1e-6
    assert torch.equal(state, expected_state.float())


def test_prefill_without_state_is_zero_padded():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, generator=gen)
    weight = torch.randn(5, 4, generator=gen)
    expected, expected_state = naive_conv(x, weight, torch.zeros(1, 5, 3))
    out, state = causal_conv1d(x, weight)
    assert rel_err(out, expected) < 1e-6
    # Shorter than the window: the state keeps zeros from before the sequence.
    assert torch.equal(state, expected_state.float())
    assert torch.equal(state[:, :, 0], torch.zeros(1, 5))


def test_update_steps_equal_prefill():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 9, 11, generator=gen)
    weight = torch.randn(11, 4, generator=gen)
    history = torch.randn(5, 11, 3, generator=gen)
    whole, whole_state = causal_conv1d(x, weight, initial_state=history)
    state = history
    steps = []
    for t in range(9):
        out, state = causal_conv1d_update(x[:, t], state, weight)
        steps.append(out)
    assert rel_err(torch.stack(steps, dim=1), whole) < 1e-6
    assert torch.allclose(state, whole_state)


def test_matches_transformers_reference():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 63, 24, generator=gen)
    weight = torch.randn(24, 4, generator=gen)
    expected = hf.causal_conv1d_fn(x.transpose(1, 2), weight, None, activation="silu").transpose(1, 2)
    out, _ = causal_conv1d(x, weight)
    assert rel_err(out, expected) < 1e-6
