"""Vision tower, early fusion and M-RoPE positions against transformers' Qwen3_5ForConditionalGeneration,
float32 on CPU, on a tiny random checkpoint fed two images of different sizes and a 4-frame video."""
import pytest
import torch

from engine_helpers import assert_matches_reference, run_engine
from qwen35.runtime import load_model
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.model.mrope import rope_index
from qwen35_tiny_vision import TOKENS, build_hf_vision_model, vision_prompt

CONTINUATION = [17, 250, 3, 99, 41, 8]  # text after the prompt, fed one token at a time when decoding


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(ours, transformers) with the same weights, loaded from the saved checkpoint."""
    hf = build_hf_vision_model()
    path = tmp_path_factory.mktemp("vision_ckpt")
    hf.save_pretrained(path)
    return load_model(path, dtype="float32", progress=False), hf


@pytest.fixture(scope="module")
def prompt():
    return vision_prompt()


def with_continuation(prompt):
    return torch.cat([prompt.ids, torch.tensor([CONTINUATION])], dim=1)


def test_vision_embeddings_match_transformers(models, prompt):
    ours, hf = models
    with torch.no_grad():
        images = ours.embed_vision(prompt.pixel_values, prompt.image_grid_thw)
        expected = torch.cat(hf.model.get_image_features(prompt.pixel_values, prompt.image_grid_thw).pooler_output)
        videos = ours.embed_vision(prompt.pixel_values_videos, prompt.video_grid_thw.tolist())
        expected_videos = torch.cat(
            hf.model.get_video_features(prompt.pixel_values_videos, prompt.video_grid_thw).pooler_output)
    assert images.shape == (15 + 8, 32) and videos.shape == (2 * 6, 32)
    assert not images.isnan().any() and not videos.isnan().any()
    assert rel_err(images, expected) < 1e-4
    assert rel_err(videos, expected_videos) < 1e-4


def test_positions_match_transformers(models, prompt):
    ours, hf = models
    ids = with_continuation(prompt)
    text_row = torch.randint(0, 250, ids.shape, generator=torch.Generator().manual_seed(5))
    batch = torch.cat([text_row, ids])  # grids are consumed by the row that holds the pads
    positions, deltas = ours.multimodal_positions(batch, prompt.image_grid_thw, prompt.video_grid_thw)
    expected, expected_deltas = hf.model.get_rope_index(batch, prompt.mm_token_type_ids(batch),
                                                        prompt.image_grid_thw, prompt.video_grid_thw)
    assert positions.shape == (3, 2, ids.shape[1])
    assert torch.equal(positions, expected)
    assert deltas.tolist() == expected_deltas.flatten().tolist()
    assert deltas[0] == 0 and deltas[1] < 0  # an image's tokens take fewer positions than slots


def test_logits_match_transformers(models, prompt):
    ours, hf = models
    ids = with_continuation(prompt)
    with torch.no_grad():
        logits = ours(ids, **prompt.media())
        expected = hf(input_ids=ids, mm_token_type_ids=prompt.mm_token_type_ids(ids), **prompt.media()).logits
    assert logits.shape == expected.shape and not logits.isnan().any()
    assert rel_err(logits, expected) < 1e-4


@pytest.mark.parametrize("chunk", [64, 16])
def test_engine_with_images_and_video_equals_the_full_forward(models, prompt, chunk):
    """Prefill (whole, or in chunks whose edges fall inside the images and the video), then decode:
    every step's logprobs are the whole-prompt forward's; a text prompt after it in the same slot starts plain."""
    ours, _ = models
    ids = prompt.ids[0].tolist()
    media = MediaInputs(prompt.pixel_values, [tuple(g) for g in prompt.image_grid_thw.tolist()],
                        prompt.pixel_values_videos, [tuple(g) for g in prompt.video_grid_thw.tolist()])
    text = torch.randint(0, 250, (12,), generator=torch.Generator().manual_seed(9)).tolist()
    requests = [(ids, media), (text, None)]
    results = run_engine(ours, requests, 6, max_running_requests=1, max_model_len=256, prefill_chunk_size=chunk)
    for request, result in zip(requests, results):
        assert_matches_reference(ours, request, result, 6)
    _, deltas = ours.multimodal_positions(prompt.ids, prompt.image_grid_thw, prompt.video_grid_thw)
    assert [result[2].rope_delta for result in results] == [int(deltas[0]), 0]


def test_pad_count_mismatch_is_a_clear_error(models, prompt):
    ours, _ = models
    short = prompt.ids[:, :-30]  # cuts into the video's pads
    with pytest.raises(ValueError, match="video pad tokens"):
        ours(short, **prompt.media())
    image_only = prompt.ids[:, :25]  # cuts into the first image's pads
    with pytest.raises(ValueError, match="image pad tokens"):
        ours(image_only, pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw)
    with pytest.raises(ValueError, match="image pad tokens .* but there are 0 image embeddings"):
        ours(prompt.ids)  # pads with nothing to fill them


def test_rope_index_refuses_leftover_grids():
    ids = torch.tensor([[1, TOKENS.image_pad, TOKENS.image_pad, 2]])
    kwargs = dict(image_token_id=TOKENS.image_pad, video_token_id=TOKENS.video_pad, spatial_merge_size=2)
    positions, deltas = rope_index(ids, image_grid_thw=[(1, 2, 4)], **kwargs)
    assert positions[:, 0].tolist() == [[0, 1, 1, 3], [0, 1, 1, 3], [0, 1, 2, 3]] and deltas.tolist() == [0]
    with pytest.raises(ValueError, match="left over"):
        rope_index(ids, image_grid_thw=[(1, 2, 4), (1, 2, 2)], **kwargs)
    with pytest.raises(ValueError, match="ends inside"):
        rope_index(ids, image_grid_thw=[(1, 4, 4)], **kwargs)
