"""Chunked multimodal prefill in the engine: chunk edges inside an image and a video give the greedy
tokens of one whole-prompt forward; text requests decoded beside it keep their own tokens."""
import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from engine_helpers import greedy, reference_greedy
from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.multimodal import MediaInputs, prepare_media
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.tokenizer import load_tokenizer
from qwen35.runtime.vision import (
    expand_prompt_ids,
    load_image_config,
    load_video_config,
    preprocess_images,
    preprocess_video,
    video_from_frames,
)

MAX_TOKENS = 6


@pytest.fixture(scope="module")
def demo(demo_path):
    return load_model(demo_path, progress=False), load_tokenizer(demo_path), demo_path


def _image(width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def request_inputs(demo):
    """Expanded prompt ids and MediaInputs for one image then one 4-frame video."""
    _, tokenizer, path = demo
    images = preprocess_images([_image()], load_image_config(path))
    video = preprocess_video(video_from_frames([np.asarray(_image(seed=s)) for s in range(1, 5)], fps=2.0),
                             load_video_config(path))
    content = [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": "with"},
               {"type": "video"}]
    text = tokenizer.chat_template.render([{"role": "user", "content": content}], add_generation_prompt=True)
    expanded = expand_prompt_ids(tokenizer.encode(text), image_grids=images.grids(), video_grids=[video.grid_thw],
                                 video_timestamps=[video.timestamps], encode=tokenizer.encode)
    media = MediaInputs(images.pixel_values, images.grids(), video.pixel_values, [video.grid_thw])
    return expanded.ids, media


def test_prepared_media_slices_cover_every_pad(demo, request_inputs):
    model, _, _ = demo
    prompt_ids, media = request_inputs
    with torch.inference_mode():
        prepared = prepare_media(model, prompt_ids, media)
    image_pads = prompt_ids.count(model.config.image_token_id)
    assert image_pads == 14 * 20 // 4 and prepared.image_embeds.shape[0] == image_pads
    video_pads = 2 * 4 * 4 // 4  # grid (2, 4, 4), 2x2 merge
    assert prepared.video_embeds.shape[0] == prompt_ids.count(model.config.video_token_id) == video_pads
    assert prepared.positions.shape == (3, len(prompt_ids)) and prepared.rope_delta < 0
    taken = {"image_embeds": 0, "video_embeds": 0}
    for start in range(0, len(prompt_ids), 16):
        chunk = prepared.chunk(start, min(start + 16, len(prompt_ids)))
        assert chunk["positions"].shape[-1] == min(16, len(prompt_ids) - start)
        for name in taken:
            taken[name] += chunk[name].shape[0] if name in chunk else 0
    assert taken == {"image_embeds": image_pads, "video_embeds": video_pads}


def test_chunked_multimodal_prefill_matches_whole_prompt(demo, request_inputs, monkeypatch):
    model, tokenizer, _ = demo
    prompt_ids, media = request_inputs
    text_ids = tokenizer.encode("A plain text prompt decoded in the same batch.")
    want_media = reference_greedy(model, prompt_ids, media, MAX_TOKENS)
    want_text = reference_greedy(model, text_ids, None, MAX_TOKENS)
    # Chunks of 16 tokens: the image's 70 pads and the video's frame groups straddle chunk edges.
    config = EngineConfig(max_running_requests=3, max_model_len=256, prefill_chunk_size=16, max_prefill_tokens=24)
    runner, _ = build_runner(model, config)
    calls = []
    original = runner.prepare_media
    monkeypatch.setattr(runner, "prepare_media", lambda ids, inputs: calls.append(len(ids)) or original(ids, inputs))
    # The random demo model's logits are nearly flat, so greedy tokens alone would hide wrong rotary
    # positions; the logprobs do not.
    params = greedy(MAX_TOKENS)

    async def main():
        engine = AsyncEngine(LLMEngine(runner, config, tokenizer))
        await engine.start()
        try:
            text_handle, = engine.submit(text_ids, [params])
            media_handles = engine.submit(prompt_ids, [params, params], media=media)  # n=2 shares one embedding
            results = []
            for handle in [*media_handles, text_handle]:
                tokens, logprobs = [], []
                async for output in handle:
                    tokens += output.token_ids
                    logprobs += [entry.logprob for entry in output.logprobs or []]
                results.append((tokens, logprobs))
            return results, text_handle.seq
        finally:
            await engine.stop()

    (first, second, text), text_seq = asyncio.run(main())
    for (tokens, logprobs), (want_tokens, want_logprobs) in ((first, want_media), (second, want_media),
                                                             (text, want_text)):
        assert tokens == want_tokens
        assert np.allclose(logprobs, want_logprobs, rtol=0, atol=1e-4), (logprobs, want_logprobs)
    assert calls == [len(prompt_ids)], "the vision tower runs once per request"
    assert text_seq.rope_delta == 0  # the text sequence, admitted first, keeps plain positions
