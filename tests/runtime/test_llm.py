"""Offline generation through LLM.generate on a tiny random checkpoint with a tiny tokenizer."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "model"))
from qwen35_tiny_checkpoints import build_hf_model  # noqa: E402

from qwen35.runtime import LLM, Output, SamplingParams  # noqa: E402
from qwen35.runtime.llm import DEFAULT_STOP_TOKEN_IDS  # noqa: E402

CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?",
          "linear attention keeps a recurrent state", "qwen mixes delta rule layers with attention"] * 4
GREEDY = dict(temperature=0.0)


def write_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm")
    build_hf_model("dense_tied", seed=11).save_pretrained(path)
    write_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(checkpoint, progress=False, prefill_chunk_size=8)


def test_text_prompt_decodes_its_tokens(llm):
    [out] = llm.generate(["hello world"], SamplingParams(max_tokens=12, **GREEDY))
    assert isinstance(out, Output)
    assert out.prompt_token_ids == llm.encode("hello world")
    assert len(out.token_ids) == 12 and out.finish_reason == "length" and out.stop_reason is None
    assert out.text == llm.tokenizer.decode(out.token_ids, skip_special_tokens=True)
    [same] = llm.generate([out.prompt_token_ids], SamplingParams(max_tokens=12, **GREEDY))
    assert same.token_ids == out.token_ids


def test_batch_of_different_lengths_equals_one_by_one(llm):
    prompts = ["the quick brown fox jumps over the lazy dog and more", "hi", [5, 17, 200, 3, 9, 44, 1]]
    params = [SamplingParams(max_tokens=n, **GREEDY) for n in (9, 14, 5)]
    batched = llm.generate(prompts, params)
    for prompt, p, out in zip(prompts, params, batched):
        [alone] = llm.generate([prompt], p)
        assert out.token_ids == alone.token_ids and out.text == alone.text
        assert len(out.token_ids) == p.max_tokens


def test_prefill_chunk_size_does_not_change_output(checkpoint, llm):
    other = LLM(checkpoint, progress=False, prefill_chunk_size=3)
    prompt = [[7, 3, 250, 11, 90, 4, 4, 61, 2, 199, 18]]
    params = SamplingParams(max_tokens=10, **GREEDY)
    assert other.generate(prompt, params)[0].token_ids == llm.generate(prompt, params)[0].token_ids


def test_stop_token_ids_end_the_output(llm):
    params = SamplingParams(max_tokens=24, **GREEDY)
    [free] = llm.generate(["hello world"], params)
    stop = free.token_ids[6]
    first = free.token_ids.index(stop)
    [out] = llm.generate(["hello world"], SamplingParams(max_tokens=24, stop_token_ids=[stop], **GREEDY))
    assert out.token_ids == free.token_ids[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == llm.tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)


def test_stop_strings_cut_the_text(llm):
    [free] = llm.generate(["the lazy"], SamplingParams(max_tokens=24, **GREEDY))
    text = free.text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert len(stop) == 3
    [out] = llm.generate(["the lazy"], SamplingParams(max_tokens=24, stop=[stop], **GREEDY))
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[:text.index(stop)]
    assert len(out.token_ids) < len(free.token_ids)


def test_eos_from_config_and_the_qwen_defaults(checkpoint, tmp_path):
    assert set(DEFAULT_STOP_TOKEN_IDS) == {248044, 248046}
    plain = LLM(checkpoint, progress=False)
    assert {248044, 248046} <= plain.eos_token_ids
    [free] = plain.generate([[1, 2, 3]], SamplingParams(max_tokens=16, **GREEDY))
    eos = free.token_ids[4]
    # The same checkpoint with eos_token_id set in its text config stops there by default...
    import shutil

    copy = shutil.copytree(checkpoint, tmp_path / "eos")
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["eos_token_id"] = eos
    (copy / "config.json").write_text(json.dumps(config))
    with_eos = LLM(copy, progress=False)
    [out] = with_eos.generate([[1, 2, 3]], SamplingParams(max_tokens=16, **GREEDY))
    assert out.token_ids == free.token_ids[:free.token_ids.index(eos) + 1] and out.finish_reason == "stop"
    # ...unless the request ignores eos.
    [ignored] = with_eos.generate([[1, 2, 3]], SamplingParams(max_tokens=16, ignore_eos=True, **GREEDY))
    assert ignored.token_ids == free.token_ids


def test_seeded_sampling_is_reproducible_and_batch_independent(llm):
    seeded = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=1234, max_tokens=12)
    [a] = llm.generate(["hello"], seeded)
    [b] = llm.generate(["hello"], seeded)
    assert a.token_ids == b.token_ids
    batched = llm.generate(["the quick brown fox", "hello"],
                           [SamplingParams(temperature=0.8, max_tokens=7), seeded])
    assert batched[1].token_ids == a.token_ids
    [c] = llm.generate(["hello"], SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=99, max_tokens=12))
    assert c.token_ids != a.token_ids


def test_penalties_change_greedy_output(llm):
    params = SamplingParams(max_tokens=20, **GREEDY)
    [free] = llm.generate([[8, 8, 8, 9]], params)
    [penalised] = llm.generate([[8, 8, 8, 9]], SamplingParams(max_tokens=20, presence_penalty=2.0,
                                                              repetition_penalty=1.5, **GREEDY))
    assert penalised.token_ids != free.token_ids
    assert len(set(penalised.token_ids)) >= len(set(free.token_ids))


def test_bad_requests_raise_value_errors(llm, checkpoint):
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="temperature"):
        llm.generate(["hi"], SamplingParams(temperature=-1.0))
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        llm.generate(["hi"], [SamplingParams(), SamplingParams()])
    assert llm.generate([], SamplingParams()) == []
