"""Images and videos through the engine against the whole-prompt forward: same greedy tokens, same logprobs.

Prompts are built by hand around random pixels (no processor): text, vision start, one pad per
merged patch, vision end. The demo model's matrices are redrawn (spread_weights) so its logits
are not flat; fp32 on the CPU. Chunk sizes put chunk edges inside images and frame groups, small
pages make prompts cross page boundaries, and packed batches mix media and text sequences:
wrong rotary positions (a lost rope delta) or misplaced vision embeddings move the logprobs far
past the tolerance.
"""
from __future__ import annotations

import pytest
import torch

from qwen35.runtime.bench.agreement import spread_weights
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.model.loader import load_model
from engine_helpers import assert_matches_reference, run_engine

DECODE_STEPS = 8


@pytest.fixture(scope="module")
def model(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=1)
    return model


def text_ids(count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 248000, (count,), generator=generator).tolist()  # below the special tokens


def random_pixels(model, grid: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Flattened patches [t * h * w, C * Tp * P * P] for one grid."""
    patch_dim = model.visual.patch_embed.proj.weight[0].numel()
    return torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=torch.Generator().manual_seed(seed))


def vision_span(model, token_id: int, pads: int) -> list[int]:
    config = model.config
    return [config.vision_start_token_id] + [token_id] * pads + [config.vision_end_token_id]


def image_prompt(model, grid=(1, 4, 6), seed=0) -> tuple[list[int], MediaInputs]:
    """Five text tokens, the image (a pad per 2x2 merged patch), six text tokens."""
    pads = grid[0] * grid[1] * grid[2] // 4
    ids = text_ids(5, seed) + vision_span(model, model.config.image_token_id, pads) + text_ids(6, seed + 1)
    return ids, MediaInputs(pixel_values=random_pixels(model, grid, seed), image_grid_thw=[grid])


def video_prompt(model, seed=0) -> tuple[list[int], MediaInputs]:
    """A 4x4-patch video of two frame groups, each behind its own timestamp text, as the chat template lays it out."""
    grid = (2, 4, 4)
    groups = [text_ids(2, seed + 10 + t) + vision_span(model, model.config.video_token_id, 4) for t in range(2)]
    ids = text_ids(4, seed) + groups[0] + groups[1] + text_ids(5, seed + 1)
    return ids, MediaInputs(pixel_values_videos=random_pixels(model, grid, seed), video_grid_thw=[grid])


@pytest.mark.parametrize("chunk", [64, 9, 5])
def test_image_prompt_with_chunk_edges_inside_the_image(model, chunk):
    request = image_prompt(model, grid=(1, 8, 8), seed=3)  # 16 pads at 6..21
    (result,) = run_engine(model, [request], DECODE_STEPS, max_running_requests=1, prefill_chunk_size=chunk,
                           page_size=8)
    assert_matches_reference(model, request, result, DECODE_STEPS)
    assert result[2].rope_delta < 0


@pytest.mark.parametrize("chunk", [64, 9])
def test_video_prompt_with_edges_inside_its_frame_groups(model, chunk):
    request = video_prompt(model, seed=5)  # frame-group pads at 7..10 and 15..18
    (result,) = run_engine(model, [request], DECODE_STEPS, max_running_requests=1, prefill_chunk_size=chunk,
                           page_size=8)
    assert_matches_reference(model, request, result, DECODE_STEPS)
    assert result[2].rope_delta < 0


def test_packed_batches_mix_media_and_text_sequences(model):
    """Image, text and video prompts prefilled in shared packed batches (chunks of 12, 40 tokens a step),
    then decoded together: each sequence keeps its own positions and embeddings."""
    requests = [image_prompt(model, seed=7), (text_ids(20, seed=11), None), video_prompt(model, seed=9)]
    results = run_engine(model, requests, DECODE_STEPS, max_running_requests=3, prefill_chunk_size=12,
                         max_prefill_tokens=40, page_size=8)
    for request, result in zip(requests, results):
        assert_matches_reference(model, request, result, DECODE_STEPS)
    assert [result[2].rope_delta < 0 for result in results] == [True, False, True]


def test_a_slot_reused_for_text_after_media_starts_plain(model):
    # A stale delta would shift every position of the text prompt alike, which rotary attention does
    # not see (it is relative): the delta is checked on the sequence, the logprobs besides.
    requests = [image_prompt(model, seed=13), (text_ids(17, seed=14), None)]
    image, text = run_engine(model, requests, DECODE_STEPS, max_running_requests=1, prefill_chunk_size=10,
                             page_size=8)
    assert image[2].slot == text[2].slot and image[2].rope_delta != 0 and text[2].rope_delta == 0
    for request, result in zip(requests, (image, text)):
        assert_matches_reference(model, request, result, DECODE_STEPS)
