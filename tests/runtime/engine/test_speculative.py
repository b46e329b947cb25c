"""MTP speculative decoding: greedy output equals plain decoding through the engine, heads that
always or never agree, the sampled output distribution, metrics and `serve --speculative-tokens`."""
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import parse_config
from qwen35.runtime.demo.config import demo_config_dict
from qwen35.runtime.engine import speculative
from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingBatch, SamplingParams, apply_penalties, filter_probs
from qwen35.runtime.llm import LLM
from qwen35.runtime.model.qwen35_model import Qwen35Model
from qwen35.runtime.server.metrics import ServerMetrics


def tiny_model(vocab: int, seed: int) -> Qwen35Model:
    """A random 4-layer model (3 GDN + 1 attention, hidden 32, untied) with one MTP layer."""
    raw = demo_config_dict("tiny")
    raw.pop("vision_config")
    raw["tie_word_embeddings"] = False
    raw["text_config"].update(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
                              linear_key_head_dim=8, linear_value_head_dim=16, tie_word_embeddings=False)
    raw["text_config"]["rope_parameters"]["mrope_section"] = [2, 1, 1]
    torch.manual_seed(seed)
    return Qwen35Model(parse_config(raw)).eval()


@torch.no_grad()
def successor_model(mtp_agrees: bool) -> Qwen35Model:
    """Next token = current token + 1 (mod 32), whatever came before; the MTP head predicts the
    same (+1 of its input token), or +2, which the main model never picks.

    Token mixers and MLPs write nothing to the residual stream (zero output projections, though
    their states and KV still update), embeddings are one-hot and lm_head shifts by one. The
    head's fc keeps the next token's embedding (or its shifted copy) and drops the hidden state.
    """
    model = tiny_model(32, seed=5)
    eye = torch.eye(32)
    shift = torch.roll(eye, 1, dims=0)  # shift @ e_t = e_{t+1}
    model.language_model.embed_tokens.weight.copy_(eye)
    model.lm_head.weight.copy_(shift)
    for layer in [*model.language_model.layers, *model.mtp.layers]:
        mixer = layer.self_attn.o_proj if layer.is_full_attention else layer.linear_attn.out_proj
        mixer.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    model.mtp.fc.weight.copy_(torch.cat([eye if mtp_agrees else shift, torch.zeros(32, 32)], dim=1))
    return model


@torch.no_grad()
def drafting_model() -> Qwen35Model:
    """Random, vocab 12, peaked distributions (lm_head x5); the MTP head predicts from the next
    token's embedding alone, which the main model mostly follows: acceptance ~0.7 at T = 1."""
    model = tiny_model(12, seed=11)
    model.lm_head.weight.mul_(5.0)
    model.mtp.fc.weight.copy_(torch.cat([torch.eye(32), torch.zeros(32, 32)], dim=1))
    model.mtp.layers[0].self_attn.o_proj.weight.zero_()
    model.mtp.layers[0].mlp.down_proj.weight.zero_()
    return model


def engine_for(model, config, tokenizer=None):
    """An LLMEngine over the model with pools for config."""
    return LLMEngine(build_runner(model, config)[0], config, tokenizer, eos_token_ids=DEFAULT_STOP_TOKEN_IDS)


def run_engine(model, prompts, params, config, tokenizer=None, observer=None):
    """Every prompt through one AsyncEngine; (token ids per prompt, logprobs per prompt, the LLMEngine)."""
    inner = engine_for(model, config, tokenizer)

    async def main():
        engine = AsyncEngine(inner, observer=observer)
        await engine.start()

        async def one(prompt, p):
            tokens, logprobs = [], []
            async for output in engine.generate(prompt, p):
                tokens += output.token_ids
                logprobs += output.logprobs or []
            return tokens, logprobs

        try:
            results = await asyncio.gather(*(one(prompt, p) for prompt, p in zip(prompts, params)))
        finally:
            await engine.stop()
        return [r[0] for r in results], [r[1] for r in results]

    tokens, logprobs = asyncio.run(main())
    return tokens, logprobs, inner


def test_engine_greedy_speculation_equals_offline_greedy_on_the_demo_checkpoint(demo_path):
    """Prompts of different lengths, chunked prefill, arrivals mid-decode, penalties and logprobs."""
    llm = LLM(demo_path, progress=False)
    prompts = [llm.encode(text) for text in
               ["Hello!", "What is the capital of France? " * 3, "Write a short poem about the sea.", "x = 1"]]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True, presence_penalty=pp, logprobs=lp)
              for m, pp, lp in ((7, 0.0, 2), (3, 1.5, None), (9, 0.0, None), (6, 0.0, 0))]
    want = llm.generate(prompts, params)
    config = EngineConfig(max_running_requests=3, max_model_len=128, prefill_chunk_size=5, max_prefill_tokens=7,
                          speculative_tokens=3)
    plain_config = EngineConfig(**{**config.__dict__, "speculative_tokens": 0})
    plain_tokens, plain_logprobs, _ = run_engine(llm.model, prompts, params, plain_config, llm.tokenizer)
    tokens, logprobs, engine = run_engine(llm.model, prompts, params, config, llm.tokenizer)
    assert tokens == [w.token_ids for w in want] == plain_tokens
    assert engine.draft_tokens > 0
    for got, expected in zip(logprobs, plain_logprobs):
        assert [g.token_id for g in got] == [e.token_id for e in expected]
        assert [[t for t, _ in g.top] for g in got] == [[t for t, _ in e.top] for e in expected]
        torch.testing.assert_close([g.logprob for g in got], [e.logprob for e in expected], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("agrees", [True, False])
def test_a_head_that_always_or_never_agrees(agrees):
    """Acceptance 1.0 with fewer main-model forwards, or 0.0; the output is plain greedy's either way."""
    model = successor_model(agrees)
    prompts = [[3], [7, 8, 9, 30], [1, 2]]
    params = [SamplingParams(temperature=0, max_tokens=13) for _ in prompts]
    config = EngineConfig(max_running_requests=3, max_model_len=64, prefill_chunk_size=8, speculative_tokens=3)
    metrics = ServerMetrics()
    tokens, _, engine = run_engine(model, prompts, params, config, observer=metrics)
    assert tokens == [[(p[-1] + i) % 32 for i in range(1, 14)] for p in prompts]
    assert engine.draft_tokens > 0
    rate = engine.accepted_tokens / engine.draft_tokens
    assert rate == (1.0 if agrees else 0.0)
    assert f"qwen35_spec_decode_acceptance_rate {1 if agrees else 0}" in metrics.render()
    assert metrics.draft_tokens.value() == engine.draft_tokens
    # One step prefills every prompt (one chunk each); then 12 tokens after the first: 3 verifies when
    # every draft lands (4 tokens each), else one per token.
    assert engine.steps - 1 == (3 if agrees else 12)


@pytest.mark.parametrize("k", [2, 4])
def test_partial_acceptance_keeps_greedy_output_exact(k):
    """A head that is right only some of the time, on a model whose output depends on its linear-attention
    state: rejections mid-draft must roll the state back exactly for the output to stay plain greedy's."""
    model = drafting_model()
    gen = torch.Generator().manual_seed(k)
    prompts = [torch.randint(0, 12, (n,), generator=gen).tolist() for n in (1, 3, 6, 10, 2)]
    params = [SamplingParams(temperature=0, max_tokens=m, repetition_penalty=r)
              for m, r in ((20, 1.0), (17, 1.2), (20, 1.0), (9, 1.0), (20, 1.5))]
    params[2] = SamplingParams(temperature=1.0, max_tokens=20)  # a sampled row batched with the greedy ones
    config = EngineConfig(max_running_requests=4, max_model_len=64, prefill_chunk_size=4, max_prefill_tokens=6,
                          speculative_tokens=k)
    want, _, _ = run_engine(model, prompts, params, EngineConfig(**{**config.__dict__, "speculative_tokens": 0}))
    got, _, engine = run_engine(model, prompts, params, config)
    assert [g for i, g in enumerate(got) if i != 2] == [w for i, w in enumerate(want) if i != 2]
    assert len(got[2]) == 20
    assert 0.2 < engine.accepted_tokens / engine.draft_tokens < 0.95


def exact_distribution(model, prompt, params, length):
    """P(first `length` sampled tokens) over every sequence, by enumeration: [V] * length."""
    vocab = model.config.text.vocab_size
    sequences = torch.tensor([prompt])
    probs = torch.ones(1)
    for position in range(length):
        logits = model(sequences)[:, -1].float()
        n = sequences.shape[0]
        counts = torch.zeros(n, vocab, dtype=torch.int32)
        for generated in sequences[:, len(prompt):].T:
            counts[torch.arange(n), generated] += 1
        mask = torch.zeros(n, vocab, dtype=torch.bool)
        mask[:, prompt] = True
        batch = SamplingBatch.from_params([params] * n, [position] * n)
        step = torch.softmax(apply_penalties(logits, batch, counts, mask) / params.temperature, dim=-1)
        step = filter_probs(step, batch)
        step = step / step.sum(dim=-1, keepdim=True)
        probs = (probs[:, None] * step).reshape(-1)
        sequences = torch.cat([sequences.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(n)[:, None]], 1)
    return probs.reshape([vocab] * length)


def sample_speculatively(model, prompt, params, rows, length, k, seed):
    """`rows` independent samples of the first `length` tokens; even rows seeded, odd ones from the generator."""
    config = EngineConfig(max_running_requests=rows, max_queue=0, max_model_len=len(prompt) + length + 2,
                          prefill_chunk_size=len(prompt), max_prefill_tokens=rows * len(prompt),
                          speculative_tokens=k, seed=seed)
    engine = engine_for(model, config)
    seqs = []
    for r in range(rows):
        row_params = SamplingParams(**{**params.__dict__, "max_tokens": length, "ignore_eos": True,
                                       "seed": seed * rows + r if r % 2 == 0 else None})
        seqs += engine.add_request(prompt, [row_params])
    while engine.has_work:
        engine.step()
    return torch.tensor([seq.output_ids for seq in seqs]), engine.accepted_tokens / engine.draft_tokens


def chi_square(samples, expected_probs):
    """Pearson's statistic over the outcomes, cells with fewer than 5 expected merged; (statistic, dof)."""
    vocab, length = expected_probs.shape[0], samples.shape[1]
    index = sum(samples[:, i] * vocab ** (length - 1 - i) for i in range(length))
    observed = torch.bincount(index, minlength=vocab ** length).double()
    expected = expected_probs.reshape(-1).double() * samples.shape[0]
    assert observed[expected == 0].sum() == 0, "sampled a token the sampler can never give"
    small = expected < 5
    observed = torch.cat([observed[~small], observed[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = expected > 0
    statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return statistic, int(keep.sum()) - 1


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0),
                                    SamplingParams(temperature=1.5, top_k=8, top_p=0.95, presence_penalty=0.8)])
def test_sampled_output_has_the_plain_samplers_distribution(params):
    """3 tokens from k = 2 speculation (4000 rows) against the exact distribution: chi-square within 5 sigma."""
    model = drafting_model()
    prompt = [3, 7]
    with torch.inference_mode():
        exact = exact_distribution(model, prompt, params, 3)
        samples, acceptance = sample_speculatively(model, prompt, params, rows=4000, length=3, k=2, seed=1)
    assert 0.3 < acceptance < 0.95, "both the accept and the reject path should be exercised"
    statistic, dof = chi_square(samples, exact)
    assert statistic < dof + 5 * (2 * dof) ** 0.5, (statistic, dof)


def test_the_distribution_check_catches_a_sampler_that_ignores_q(monkeypatch):
    """Power check of the chi-square above: treating q as 1 (right only for argmax drafts) fails it."""
    real = speculative.verify_drafts
    monkeypatch.setattr(speculative, "verify_drafts", lambda logits, drafts, q, *rest: real(
        logits, drafts, None if q is None else torch.ones_like(q), *rest))
    model = drafting_model()
    params = SamplingParams(temperature=1.0)
    with torch.inference_mode():
        exact = exact_distribution(model, [3, 7], params, 3)
        samples, _ = sample_speculatively(model, [3, 7], params, rows=4000, length=3, k=2, seed=1)
    statistic, dof = chi_square(samples, exact)
    assert statistic > dof + 15 * (2 * dof) ** 0.5, (statistic, dof)


def test_seeded_requests_repeat_under_speculation():
    """A seeded row gives the same tokens on every run (its draws depend only on its seed and step)."""
    model = tiny_model(vocab=12, seed=11)
    params = SamplingParams(temperature=1.0)
    with torch.inference_mode():
        first, _ = sample_speculatively(model, [1, 2], params, rows=4, length=6, k=2, seed=3)
        second, _ = sample_speculatively(model, [1, 2], params, rows=4, length=6, k=2, seed=3)
    assert torch.equal(first[0::2], second[0::2])


def test_serve_with_speculative_tokens_answers_and_exports_acceptance(demo_path):
    """--speculative-tokens k reaches the runner and engine, /metrics shows the draft counters;
    out-of-range values are usage errors and --help lists the option."""
    from fastapi.testclient import TestClient

    from qwen35.runtime.server.launch import ServeOptions, build_app

    app, summary = build_app(ServeOptions(model=str(demo_path), device="cpu", max_model_len=64,
                                          max_running_requests=2, speculative_tokens=2), progress=False)
    engine = app.state.qwen35.engine.engine
    assert summary["speculative_tokens"] == 2 and engine.config.speculative_tokens == 2
    # The runner composes the MTP drafter, and serves text only while it speculates.
    assert engine.runner.drafter.num_speculative_tokens == 2 and not engine.takes_media
    assert app.state.qwen35.settings.text_only
    with TestClient(app) as client:
        reply = client.post("/v1/completions", json={"model": summary["model"], "prompt": "Hello",
                                                     "max_tokens": 5, "temperature": 0})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 5
        metrics = client.get("/metrics").text
    drafted = engine.draft_tokens
    assert drafted > 0 and f"qwen35_spec_decode_draft_tokens_total {drafted}" in metrics
    assert "qwen35_spec_decode_acceptance_rate " in metrics
    with pytest.raises(InputError, match="--speculative-tokens"):
        ServeOptions(model=str(demo_path), speculative_tokens=9).validate()
    qwen35 = Path(sys.executable).with_name("qwen35")
    help_text = subprocess.run([str(qwen35), "serve", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, timeout=60).stdout
    assert "--speculative-tokens" in help_text


def test_speculation_gives_every_page_and_slot_back_and_refuses_what_it_cannot_serve(demo_path):
    """Idle after speculating, the books hold nothing; media prompts and a checkpoint without an MTP head
    are refused with the reason."""
    model = drafting_model()
    prompts = [[1, 2, 3], [4] * 19, [5, 6]]
    params = [SamplingParams(temperature=0, max_tokens=m) for m in (11, 5, 17)]
    config = EngineConfig(max_running_requests=2, max_model_len=48, prefill_chunk_size=8, speculative_tokens=2)
    _, _, engine = run_engine(model, prompts, params, config)
    assert engine.draft_tokens > 0
    books = engine.scheduler
    assert books.num_available_pages == engine.runner.num_pages and books.slots.num_free == engine.runner.num_slots
    assert not engine.takes_media
    with pytest.raises(ValueError, match="text only"):
        engine.add_request([1, 2], [SamplingParams(max_tokens=2)], media=MediaInputs(torch.zeros(4, 8), [(1, 2, 2)]))
    bare = LLM(demo_path, progress=False).model
    bare.mtp = None
    with pytest.raises(ValueError, match="MTP head"):
        build_runner(bare, config)

