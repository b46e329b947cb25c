"""The demo checkpoint loads with our runtime and generates on CPU, quickly."""
import time

import pytest
import torch

from qwen35.runtime.demo import write_demo_checkpoint

runtime_model = pytest.importorskip("qwen35.runtime.model.loader", reason="the runtime loader is not there yet")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("generate") / "demo", seed=0)


def test_load_and_greedy_decode(demo_dir):
    started = time.process_time()
    model = runtime_model.load_model(demo_dir, progress=False)
    # CPU seconds, so a busy shared machine does not make this flaky; the target is < 3 s.
    assert time.process_time() - started < 3.0
    prompt = [248045, 872, 198, 9707, 248046, 198, 248045, 77091, 198]
    with torch.inference_mode():
        generated = []
        for _ in range(4):
            logits = model(torch.tensor([prompt + generated]))
            assert torch.isfinite(logits).all()
            generated.append(int(logits[0, -1].argmax()))
    assert len(generated) == 4 and all(0 <= token < 248320 for token in generated)


def test_llm_generates_from_a_chat_prompt(demo_dir):
    from qwen35.runtime.llm import LLM
    from qwen35.runtime.engine.sampling import SamplingParams

    llm = LLM(demo_dir, progress=False)
    prompt = llm.tokenizer.chat_template.render([{"role": "user", "content": "Hello!"}])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    first = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))[0]
    second = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))[0]
    assert len(first.token_ids) == 5 and first.finish_reason == "length"
    assert first.token_ids == second.token_ids and isinstance(first.text, str)
    assert first.prompt_token_ids == llm.tokenizer.encode(prompt)
