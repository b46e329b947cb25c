"""Our Qwen3.5 against transformers on tiny random checkpoints, in float32 on CPU."""
import pytest
import torch

from qwen35.runtime import LLM, SamplingParams, load_model
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35_tiny_checkpoints import ALL_VARIANTS, VOCAB


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def random_ids(batch, length, seed):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_logits_match_transformers(hf_checkpoints, variant):
    path, hf = hf_checkpoints(variant)
    model = load_model(path, progress=False)
    ids = random_ids(3, 67, seed=1)  # odd length, crosses a 64-token GDN chunk
    with torch.no_grad():
        ours = model(ids)
        expected = hf(input_ids=ids).logits
    assert ours.shape == (3, 67, VOCAB) and ours.dtype == torch.float32
    assert not ours.isnan().any()
    assert rel_err(ours, expected) < 1e-4


def engine_logprobs(model, prompts, max_tokens, chunk, slots):
    """Greedy tokens and the engine's raw logprob of each, through LLMEngine.step (chunked prefill, batched decode)."""
    config = EngineConfig(max_running_requests=slots, max_model_len=96, prefill_chunk_size=chunk,
                          max_prefill_tokens=chunk + 3)
    engine = LLMEngine(build_runner(model, config)[0], config)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=2)
    seqs = [engine.add_request(prompt, [params])[0] for prompt in prompts]
    logprobs = {seq.seq_id: [] for seq in seqs}
    while engine.has_work:
        for seq, output in engine.step():
            logprobs[seq.seq_id] += [lp.logprob for lp in output.logprobs or []]
    return [(seq.output_ids, logprobs[seq.seq_id]) for seq in seqs]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("chunk", [7, 64])
def test_engine_steps_equal_the_full_forward(hf_checkpoints, variant, chunk):
    """Prompts of different lengths, prefilled whole or in chunks, decoded together at their own
    positions, more prompts than slots: every step's logprobs are the full forward's."""
    path, _ = hf_checkpoints(variant)
    model = load_model(path, progress=False)
    prompts = [random_ids(1, n, seed=20 + n)[0].tolist() for n in (5, 30, 17, 49)]
    with torch.no_grad():
        results = engine_logprobs(model, prompts, max_tokens=6, chunk=chunk, slots=3)
        for prompt, (tokens, logprobs) in zip(prompts, results):
            full = torch.log_softmax(model(torch.tensor([prompt + tokens]))[0].double(), dim=-1)
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(tokens) - 1)
            expected = full[positions, torch.tensor(tokens)]
            assert tokens == full[positions].argmax(dim=-1).tolist()
            torch.testing.assert_close(torch.tensor(logprobs, dtype=torch.double), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_greedy_generation_matches_transformers(hf_checkpoints, variant):
    path, hf = hf_checkpoints(variant)
    llm = LLM(path, progress=False, prefill_chunk_size=16)
    prompts = [random_ids(1, 23, seed=4)[0].tolist(), random_ids(1, 9, seed=5)[0].tolist()]
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=32))
    for prompt, output in zip(prompts, outputs):
        with torch.no_grad():
            expected = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):]
        assert output.token_ids == expected.tolist()
        assert output.finish_reason == "length"
        assert output.prompt_token_ids == prompt


def test_multimodal_rotary_sections_match_transformers():
    """[3, B, T] positions pick their rotary slots the way transformers interleaves M-RoPE."""
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5TextRotaryEmbedding

    from qwen35.planner.models.config import parse_config
    from qwen35.runtime.model.rotary import RotaryEmbedding
    from qwen35_tiny_checkpoints import text_config

    text = text_config(False, True, 4, 2, 2, 4)
    ours = RotaryEmbedding(parse_config({"model_type": "qwen3_5", "text_config": text}).text)
    theirs = Qwen3_5TextRotaryEmbedding(Qwen3_5TextConfig(**text))
    positions = torch.randint(0, 50, (3, 2, 11))
    cos, sin = ours(positions, torch.float32)
    hf_cos, hf_sin = theirs(torch.zeros(1, dtype=torch.float32), positions)
    assert torch.allclose(cos, hf_cos, atol=1e-6) and torch.allclose(sin, hf_sin, atol=1e-6)
    # Text positions (the same index in all three rows) reduce to plain RoPE.
    same = positions[:1].expand(3, -1, -1)
    assert torch.allclose(ours(same, torch.float32)[0], ours(same[0], torch.float32)[0])
