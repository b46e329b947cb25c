"""logit_bias in the sampler, and the integer bounds that keep every accepted value inside the batch's tensors."""
import pytest
import torch

from qwen35.runtime.engine.sampling import MAX_TOP_K, SamplingBatch, SamplingParams, sample


def test_logit_bias_moves_greedy_and_sampled_rows_and_leaves_raw_logprobs():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 40, generator=gen)
    best = logits.argmax(dim=-1)
    params = [SamplingParams(temperature=0.0, logit_bias={7: 100.0}, logprobs=2),
              SamplingParams(temperature=0.0, logit_bias={int(best[1]): -100.0}),
              SamplingParams(temperature=1.0, seed=3, logit_bias={9: 100.0, 8: 50.0}),
              SamplingParams(temperature=0.0)]
    out = sample(logits, SamplingBatch.from_params(params), generator=gen)
    assert out.token_ids.tolist()[0] == 7 and out.token_ids.tolist()[2] == 9
    assert out.token_ids[1] != best[1] and out.token_ids[3] == best[3]
    expected = logits[1].clone()
    expected[best[1]] -= 100.0
    assert out.token_ids[1] == expected.argmax()
    raw = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(out.top_logprobs, raw.topk(2).values)  # the bias is not in the logprobs
    assert torch.equal(logits.argmax(dim=-1), best), "the caller's logits are not written to"


def test_a_batch_without_bias_carries_no_bias_tensors():
    assert SamplingBatch.from_params([SamplingParams(), SamplingParams(temperature=0.0)]).logit_bias is None


def test_the_largest_accepted_integers_fit_the_batch_tensors():
    params = [SamplingParams(top_k=MAX_TOP_K, seed=2 ** 63 - 1), SamplingParams(top_k=MAX_TOP_K, seed=-2 ** 63),
              SamplingParams(logit_bias={2 ** 31 - 1: 1.0})]
    for p in params:
        p.validate()
    batch = SamplingBatch.from_params(params[:2])
    out = sample(torch.randn(2, 16, generator=torch.Generator().manual_seed(1)), batch)
    assert out.token_ids.shape == (2,)


@pytest.mark.parametrize("field,value", [
    ("top_k", 2 ** 31), ("top_k", 2 ** 63), ("seed", 2 ** 63), ("seed", -2 ** 63 - 1),
    ("logit_bias", {1: 100.5}), ("logit_bias", {1: float("nan")}), ("logit_bias", {-1: 1.0}),
    ("logit_bias", {2 ** 31: 1.0}), ("logit_bias", {"1": 1.0}), ("logit_bias", {1: True}),
    ("logit_bias", {i: 1.0 for i in range(1025)}),
])
def test_out_of_range_integers_and_biases_are_refused(field, value):
    with pytest.raises(ValueError, match=f"^{field}: ") as caught:
        SamplingParams(**{field: value}).validate()
    assert len(str(caught.value)) < 300, "the value is shown short"
