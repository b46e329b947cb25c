"""The gated delta rule kernels against a naive per-token loop written from the recurrence."""
import pytest
import torch

from qwen35.runtime.kernels.gated_delta_rule import chunk_gated_delta_rule, recurrent_gated_delta_rule


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


def random_inputs(batch, length, num_k_heads, num_v_heads, dk, dv, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, num_k_heads, dk, generator=gen)
    k = torch.randn(batch, length, num_k_heads, dk, generator=gen)
    v = torch.randn(batch, length, num_v_heads, dv, generator=gen)
    # Realistic log-decays: -exp(A_log) * softplus(a + dt_bias), some near 0 and some strong.
    g = -torch.rand(num_v_heads, generator=gen).mul(4).exp() * torch.nn.functional.softplus(
        torch.randn(batch, length, num_v_heads, generator=gen))
    beta = torch.rand(batch, length, num_v_heads, generator=gen)
    state = torch.randn(batch, num_v_heads, dk, dv, generator=gen) * 0.5
    return q, k, v, g, beta, state


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("heads", [(2, 2), (2, 4), (1, 3)])
def test_chunk_matches_naive_with_initial_state(chunk_size, heads):
    q, k, v, g, beta, state = random_inputs(3, 63, heads[0], heads[1], 16, 8)
    expected, expected_state = naive_gated_delta_rule(q, k, v, g, beta, state)
    out, final = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=state, chunk_size=chunk_size)
    assert out.shape == (3, 63, heads[1], 8) and out.dtype == torch.float32
    assert final.shape == (3, heads[1], 16, 8) and final.dtype == torch.float32
    assert not out.isnan().any() and not final.isnan().any()
    assert rel_err(out, expected) < 1e-5
    assert rel_err(final, expected_state) < 1e-5


def test_recurrent_matches_naive():
    q, k, v, g, beta, state = random_inputs(3, 17, 2, 4, 16, 8, seed=1)
    expected, expected_state = naive_gated_delta_rule(q, k, v, g, beta, state)
    out, final = recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state)
    assert not out.isnan().any()
    assert rel_err(out, expected) < 1e-5
    assert rel_err(final, expected_state) < 1e-5


def test_chunk_without_initial_state_starts_from_zero():
    q, k, v, g, beta, state = random_inputs(1, 5, 2, 2, 8, 8, seed=2)
    expected, expected_state = naive_gated_delta_rule(q, k, v, g, beta, torch.zeros_like(state))
    out, final = chunk_gated_delta_rule(q, k, v, g, beta)
    assert rel_err(out, expected) < 1e-5
    assert rel_err(final, expected_state) < 1e-5


def test_chunks_compose_through_the_state():
    """Prefill in two calls, then decode with the recurrent form: same as one call over all tokens."""
    q, k, v, g, beta, state = random_inputs(3, 70, 2, 4, 16, 8, seed=3)
    whole, whole_state = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=state)
    first, mid = chunk_gated_delta_rule(*(x[:, :41] for x in (q, k, v, g, beta)), initial_state=state)
    second, mid2 = chunk_gated_delta_rule(*(x[:, 41:69] for x in (q, k, v, g, beta)), initial_state=mid)
    last, end = recurrent_gated_delta_rule(*(x[:, 69:] for x in (q, k, v, g, beta)), initial_state=mid2)
    assert rel_err(torch.cat([first, second, last], dim=1), whole) < 1e-5
    assert rel_err(end, whole_state) < 1e-5


def test_low_precision_inputs_keep_fp32_state():
    q, k, v, g, beta, state = random_inputs(1, 63, 2, 4, 16, 8, seed=4)
    expected, expected_state = naive_gated_delta_rule(q, k, v, g, beta, state)
    out, final = chunk_gated_delta_rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, beta.bfloat16(),
                                        initial_state=state)
    assert out.dtype == torch.bfloat16 and final.dtype == torch.float32
    assert not out.isnan().any()
    assert rel_err(out, expected) < 3e-2
    assert rel_err(final, expected_state) < 3e-2


def test_matches_transformers_reference():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    q, k, v, g, beta, state = random_inputs(3, 63, 2, 4, 16, 8, seed=5)
    expected, expected_state = hf.torch_chunk_gated_delta_rule(
        q, k, v, g=g, beta=beta, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    out, final = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=state)
    assert rel_err(out, expected) < 1e-5
    assert rel_err(final, expected_state) < 1e-5
