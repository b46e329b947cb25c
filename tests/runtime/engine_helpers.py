"""Driving the real engine in tests, and the whole-prompt forward its outputs are held to.

The reference for any engine run is `model(ids)`: one whole-prompt forward from position 0 over a
scratch cache (vision included), recomputed for every generated token. Chunked prefill, packed
batches, slot reuse, rope deltas and speculation must all reproduce its greedy tokens and logprobs.
"""
from __future__ import annotations

import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams


def media_kwargs(media: MediaInputs | None) -> dict:
    """The whole-prompt forward's keyword arguments for a request's media."""
    if media is None:
        return {}
    return dict(pixel_values=media.pixel_values, image_grid_thw=media.image_grid_thw or None,
                pixel_values_videos=media.pixel_values_videos, video_grid_thw=media.video_grid_thw or None)


@torch.inference_mode()
def reference_greedy(model, prompt_ids: list[int], media: MediaInputs | None, steps: int):
    """Greedy tokens and their raw logprobs from whole-prompt forwards, one more token each time."""
    tokens, logprobs = [], []
    for _ in range(steps):
        logits = model(torch.tensor([prompt_ids + tokens]), **media_kwargs(media))[0, -1].double()
        tokens.append(int(logits.argmax()))
        logprobs.append(float(logits.log_softmax(-1)[tokens[-1]]))
    return tokens, logprobs


def greedy(steps: int, logprobs: int | None = 0) -> SamplingParams:
    """Greedy, exactly `steps` tokens, raw logprobs of the chosen tokens."""
    return SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True, logprobs=logprobs)


def run_engine(model, requests: list[tuple[list[int], MediaInputs | None]], steps: int, **settings):
    """Every request through one LLMEngine (queued together); (tokens, logprobs, sequence) per request."""
    config = EngineConfig(**{"max_model_len": 128, **settings})
    engine = LLMEngine(build_runner(model, config)[0], config)
    seqs = [engine.add_request(ids, [greedy(steps)], media)[0] for ids, media in requests]
    logprobs = {seq.seq_id: [] for seq in seqs}
    while engine.has_work:
        for seq, output in engine.step():
            assert output.finish_reason != "error", output.error
            logprobs[seq.seq_id] += [entry.logprob for entry in output.logprobs or []]
    return [(seq.output_ids, logprobs[seq.seq_id], seq) for seq in seqs]


def assert_matches_reference(model, request, result, steps: int, atol: float = 1e-4) -> None:
    """The engine's tokens equal the reference's, and its logprobs agree to atol."""
    want_tokens, want_logprobs = reference_greedy(model, *request, steps)
    tokens, logprobs, _ = result
    assert tokens == want_tokens
    torch.testing.assert_close(torch.tensor(logprobs, dtype=torch.double), torch.tensor(want_logprobs, dtype=torch.double), rtol=0,
                               atol=atol)
