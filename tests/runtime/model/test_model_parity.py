"""Our Qwen3.5 against transformers on tiny random checkpoints, in float32 on CPU."""
import pytest
import torch

from qwen35.runtime import LLM, SamplingParams, load_model
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


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_prefill_then_decode_equals_full_forward(hf_checkpoints, variant):
    path, _ = hf_checkpoints(variant)
    model = load_model(path, progress=False)
    ids = random_ids(3, 49, seed=2)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(3, 49)
        steps = [model(ids[:, :40], cache)]
        for t in range(40, 49):
            steps.append(model(ids[:, t:t + 1], cache))
    assert cache.lengths == [49, 49, 49]
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-4


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_chunked_prefill_equals_one_shot(hf_checkpoints, variant):
    path, _ = hf_checkpoints(variant)
    model = load_model(path, progress=False)
    ids = random_ids(2, 45, seed=3)
    with torch.no_grad():
        one_shot = model.new_cache(2, 46)
        whole = model(ids, one_shot)
        chunked = model.new_cache(2, 46)
        pieces = [model(ids[:, s:s + 7], chunked) for s in range(0, 45, 7)]
        # The next decode step sees the same state either way.
        nxt = ids[:, :1]
        after_whole, after_chunks = model(nxt, one_shot), model(nxt, chunked)
    assert rel_err(torch.cat(pieces, dim=1), whole) < 1e-4
    assert rel_err(after_chunks, after_whole) < 1e-4
    for layer, state in one_shot.recurrent.items():
        assert rel_err(chunked.recurrent[layer], state) < 1e-4
    for layer, key in one_shot.key.items():
        assert rel_err(chunked.key[layer][:, :46], key[:, :46]) < 1e-4


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


def test_batched_decode_rows_at_different_positions(hf_checkpoints):
    """Rows prefilled to different lengths decode together; each equals its own full forward."""
    path, _ = hf_checkpoints("moe_untied")
    model = load_model(path, progress=False)
    lengths = [5, 30, 17]
    prompts = [random_ids(1, n + 4, seed=10 + n)[0] for n in lengths]
    with torch.no_grad():
        cache = model.new_cache(3, 40)
        for row, (prompt, n) in enumerate(zip(prompts, lengths)):
            model(prompt[None, :n], cache, rows=[row])
        steps = []
        for t in range(4):
            step = torch.stack([p[n + t] for p, n in zip(prompts, lengths)])[:, None]
            steps.append(model(step, cache)[:, 0])
        # A decode over a subset of rows, out of order, also lands in the right rows.
        partial = model(torch.tensor([[1], [2]]), cache, rows=[2, 0])[:, 0]
        for row, (prompt, n) in enumerate(zip(prompts, lengths)):
            full = model(prompt[None])[0]
            assert rel_err(torch.stack([s[row] for s in steps]), full[n:n + 4]) < 1e-4
        extended = {r: model(torch.cat([prompts[r], torch.tensor([tok])])[None])[0, -1]
                    for r, tok in ((2, 1), (0, 2))}
    assert rel_err(partial[0], extended[2]) < 1e-4
    assert rel_err(partial[1], extended[0]) < 1e-4
    assert cache.lengths == [10, 34, 22]
    with pytest.raises(ValueError, match="2 rows but the call names 3 cache rows"):
        model(torch.tensor([[1], [2]]), cache)


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
