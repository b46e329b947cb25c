"""The batched sampler against plain per-element definitions and its statistical contract."""
import math

import pytest
import torch

from qwen35.runtime.engine.sampling import (
    SamplingBatch,
    SamplingParams,
    TokenHistory,
    apply_penalties,
    filter_probs,
    sample,
)


def _batch(params, steps=None):
    return SamplingBatch.from_params(params, steps=steps)


def _penalties_by_hand(logits, counts, prompt_mask, params):
    """Per-element OpenAI/vLLM penalties: repetition, then frequency, then presence."""
    out = logits.clone()
    for row, p in enumerate(params):
        for token in range(logits.shape[1]):
            value = logits[row, token].item()
            count = counts[row, token].item()
            if count > 0 or prompt_mask[row, token].item():
                if value > 0:
                    value = value / p.repetition_penalty
                else:
                    value = value * p.repetition_penalty
            value -= p.frequency_penalty * count
            value -= p.presence_penalty * (1.0 if count > 0 else 0.0)
            out[row, token] = value
    return out


def test_penalties_match_per_element_definition():
    gen = torch.Generator().manual_seed(0)
    rows, vocab = 4, 23
    logits = torch.randn(rows, vocab, generator=gen) * 3
    params = [
        SamplingParams(presence_penalty=1.5),
        SamplingParams(frequency_penalty=0.7, repetition_penalty=1.3),
        SamplingParams(presence_penalty=-0.5, frequency_penalty=-1.0, repetition_penalty=0.8),
        SamplingParams(),
    ]
    history = TokenHistory(num_slots=6, vocab_size=vocab)
    slots = torch.tensor([5, 0, 3, 1])
    for slot in slots.tolist():
        history.start(slot, torch.randint(0, vocab, (5,), generator=gen))
    for _ in range(12):
        history.append(slots, torch.randint(0, vocab // 2, (rows,), generator=gen))
    counts, prompt_mask = history.rows(slots)
    assert counts.sum().item() == 12 * rows and counts.max().item() > 1

    got = apply_penalties(logits, _batch(params), counts, prompt_mask)
    want = _penalties_by_hand(logits, counts, prompt_mask, params)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got[3], logits[3], rtol=0, atol=0)


def test_token_history_counts_and_reset():
    history = TokenHistory(num_slots=2, vocab_size=8)
    history.start(1, [2, 2, 5])
    history.append(torch.tensor([1, 1]), torch.tensor([3, 3]))  # two tokens in one call
    history.append(torch.tensor([1]), torch.tensor([4]))
    counts, mask = history.rows(torch.tensor([1]))
    assert counts[0].tolist() == [0, 0, 0, 2, 1, 0, 0, 0]
    assert mask[0].nonzero().flatten().tolist() == [2, 5]
    history.start(1, [0])
    counts, mask = history.rows(torch.tensor([1]))
    assert counts.sum().item() == 0 and mask[0].nonzero().flatten().tolist() == [0]


def test_penalties_need_history():
    with pytest.raises(ValueError, match="TokenHistory"):
        sample(torch.zeros(1, 4), _batch([SamplingParams(presence_penalty=1.0)]))


def test_greedy_is_argmax_of_penalised_logits():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 40, generator=gen)
    out = sample(logits, _batch([SamplingParams(temperature=0.0)] * 5), generator=gen)
    assert torch.equal(out.token_ids, logits.argmax(-1))

    # A presence penalty moves the argmax off an already generated token.
    history = TokenHistory(num_slots=1, vocab_size=40)
    history.start(0, [])
    history.append(torch.tensor([0]), torch.tensor([7]))
    peaked = torch.zeros(1, 40)
    peaked[0, 7], peaked[0, 20] = 1.0, 0.5
    batch = _batch([SamplingParams(temperature=0.0, presence_penalty=2.0)])
    assert sample(peaked, batch, history, torch.tensor([0])).token_ids.item() == 20


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.5, top_k=1),
    SamplingParams(temperature=1.0, top_p=1e-6),
    SamplingParams(temperature=0.8, min_p=1.0),
    SamplingParams(temperature=1.0, top_k=1, seed=3),
])
def test_narrow_filters_reduce_to_greedy(params):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 64, generator=gen)
    for step in range(5):
        out = sample(logits, _batch([params] * 7, steps=[step] * 7), generator=gen)
        assert torch.equal(out.token_ids, logits.argmax(-1))


def test_filter_sets_top_k_top_p_min_p():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])

    def kept(**kw):
        filtered = filter_probs(probs, _batch([SamplingParams(**kw)]))
        assert torch.equal(filtered[filtered > 0], probs[filtered > 0])  # survivors untouched
        return (filtered[0] > 0).nonzero().flatten().tolist()

    assert kept() == [0, 1, 2, 3, 4]
    assert kept(top_k=2) == [0, 1]
    assert kept(top_p=0.75) == [0, 1, 2]
    # top_p sees the top_k-renormalised mass: 0.5/0.85 = 0.588 < 0.6, 0.85/0.85 >= 0.6.
    assert kept(top_k=3, top_p=0.6) == [0, 1]
    assert kept(top_k=2, top_p=0.75) == [0, 1]
    # min_p keeps p >= min_p * p_max: 0.3 * 0.5 = 0.15.
    assert kept(min_p=0.3) == [0, 1, 2]
    assert kept(top_p=0.75, min_p=0.35) == [0, 1]


def test_min_p_never_samples_below_threshold():
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    rows = 4000
    params = SamplingParams(min_p=0.3, seed=11)
    out = sample(probs.log().expand(rows, -1), _batch([params] * rows, steps=range(rows)))
    seen = torch.bincount(out.token_ids, minlength=5)
    assert seen[3:].sum().item() == 0  # 0.1 and 0.05 < 0.3 * 0.4
    assert (seen[:3] > 0).all()


def _expected(logits, temperature=1.0, top_k=0):
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k:
        probs[probs < probs.topk(top_k).values[-1]] = 0
    return probs / probs.sum()


@pytest.mark.parametrize("kind", ["seed_per_row", "steps_of_one_seed", "generator"])
@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 4)])
def test_empirical_distribution_matches_softmax(kind, temperature, top_k):
    logits = torch.tensor([1.0, 0.5, 0.0, -0.3, -1.0, -2.0])
    rows = 20000
    seeds = {"seed_per_row": list(range(rows)), "steps_of_one_seed": [7] * rows,
             "generator": [None] * rows}[kind]
    steps = list(range(rows)) if kind == "steps_of_one_seed" else None
    params = [SamplingParams(temperature=temperature, top_k=top_k, seed=s) for s in seeds]
    out = sample(logits.expand(rows, -1), _batch(params, steps=steps),
                 generator=torch.Generator().manual_seed(5))
    freq = torch.bincount(out.token_ids, minlength=6).float() / rows
    want = _expected(logits, temperature, top_k)
    # 4 standard errors of the largest probability: a fixed seed makes this deterministic.
    assert (freq - want).abs().max().item() < 4 * math.sqrt(0.25 / rows)
    if top_k:
        assert freq[top_k:].sum().item() == 0


def test_seeded_rows_ignore_batch_composition():
    gen = torch.Generator().manual_seed(3)
    vocab = 500
    mine = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=1234)
    others = [SamplingParams(seed=99), SamplingParams(), SamplingParams(temperature=0.0),
              SamplingParams(top_k=5, presence_penalty=1.0, seed=-5)]
    history = TokenHistory(num_slots=5, vocab_size=vocab)
    for slot in range(5):
        history.start(slot, [1, 2, 3])
    alone, batched = [], []
    for step in range(20):
        logits = torch.randn(5, vocab, generator=gen)
        solo = sample(logits[2:3], _batch([mine], steps=[step]), generator=gen)
        batch = _batch(others[:2] + [mine] + others[2:], steps=[step + 10, 0, step, 3, step])
        full = sample(logits, batch, history, torch.arange(5), generator=gen)
        history.append(torch.arange(5), full.token_ids)
        alone.append(solo.token_ids.item())
        batched.append(full.token_ids[2].item())
    assert alone == batched
    assert len(set(alone)) > 5  # it is really sampling


def test_seeded_sampling_is_reproducible_and_step_dependent():
    logits = torch.zeros(1, 1000)

    def draw(seed, step):
        batch = _batch([SamplingParams(seed=seed)], steps=[step])
        return sample(logits, batch, generator=torch.Generator().manual_seed(step)).token_ids.item()

    assert [draw(42, s) for s in range(8)] == [draw(42, s) for s in range(8)]
    assert len({draw(42, s) for s in range(8)}) > 4
    assert len({draw(s, 0) for s in (1, 2, 3, 2**40, -1, 2**70)}) > 4


def test_logprobs_are_raw_and_topn_sized():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 30, generator=gen)
    params = [SamplingParams(temperature=0.5, top_k=3, logprobs=5, seed=1),
              SamplingParams(temperature=0.0, logprobs=0),
              SamplingParams()]
    out = sample(logits, _batch(params), generator=gen)
    raw = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(out.logprobs, raw.gather(1, out.token_ids[:, None]).squeeze(1))
    assert out.top_ids.shape == (3, 5)
    torch.testing.assert_close(out.top_logprobs, raw.topk(5).values)
    assert torch.equal(out.top_ids, raw.topk(5).indices)
    assert sample(logits, _batch([SamplingParams()] * 3), generator=gen).logprobs is None
    only_chosen = sample(logits, _batch([SamplingParams(logprobs=0)] * 3), generator=gen)
    assert only_chosen.top_ids.shape == (3, 0) and only_chosen.logprobs.shape == (3,)


def test_bf16_logits_are_accepted():
    logits = torch.randn(2, 16, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    out = sample(logits, _batch([SamplingParams(temperature=0.0), SamplingParams(seed=1)]))
    assert out.token_ids.dtype == torch.int64
    assert out.token_ids[0].item() == logits[0].float().argmax().item()


def test_default_params_are_valid():
    SamplingParams().validate()
    SamplingParams(temperature=0.0, top_k=-1, top_p=1.0, presence_penalty=2.0, logprobs=20,
                   seed=-3, stop=["\n\n"], stop_token_ids=[248046]).validate()


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0.0), ("top_p", 1.1),
    ("top_k", -2), ("top_k", 1.5), ("min_p", 1.5), ("presence_penalty", 2.1),
    ("frequency_penalty", -3.0), ("repetition_penalty", 0.0), ("repetition_penalty", 2.5),
    ("seed", "7"), ("max_tokens", 0), ("stop", [""]), ("stop", "END"),
    ("stop_token_ids", [-1]), ("logprobs", 21), ("logprobs", -1), ("n", 0), ("n", 129),
])
def test_validation_names_the_parameter(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        SamplingParams(**{field: value}).validate()
