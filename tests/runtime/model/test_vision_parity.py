"""Vision tower, early fusion and M-RoPE positions against transformers' Qwen3_5ForConditionalGeneration,
float32 on CPU, on a tiny random checkpoint fed two images of different sizes and a 4-frame video."""
import pytest
import torch

from qwen35.runtime import load_model
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


def test_prefill_with_images_then_decode_equals_full_forward(models, prompt):
    ours, _ = models
    ids = with_continuation(prompt)
    length = prompt.ids.shape[1]
    with torch.no_grad():
        full = ours(ids, **prompt.media())
        cache = ours.new_cache(1, ids.shape[1])
        steps = [ours(prompt.ids, cache, **prompt.media())]
        _, deltas = ours.multimodal_positions(prompt.ids, prompt.image_grid_thw, prompt.video_grid_thw)
        assert cache.rope_deltas == deltas.tolist()
        for t in range(length, ids.shape[1]):
            steps.append(ours(ids[:, t:t + 1], cache))
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-4


def test_chunked_prefill_with_positions_and_embeds(models, prompt):
    ours, _ = models
    ids = with_continuation(prompt)
    length = prompt.ids.shape[1]
    with torch.no_grad():
        full = ours(ids, **prompt.media())
        positions, _ = ours.multimodal_positions(prompt.ids, prompt.image_grid_thw, prompt.video_grid_thw)
        images = ours.embed_vision(prompt.pixel_values, prompt.image_grid_thw)
        videos = ours.embed_vision(prompt.pixel_values_videos, prompt.video_grid_thw)
        cache = ours.new_cache(2, ids.shape[1])
        used = {TOKENS.image_pad: 0, TOKENS.video_pad: 0}
        pieces = []
        for start in range(0, length, 16):  # chunk edges fall inside images and the video
            chunk = prompt.ids[:, start:start + 16]
            embeds = {}
            for name, pad, table in (("image_embeds", TOKENS.image_pad, images), ("video_embeds", TOKENS.video_pad,
                                                                                   videos)):
                count = int((chunk == pad).sum())
                if count:
                    embeds[name] = table[used[pad]:used[pad] + count]
                    used[pad] += count
            pieces.append(ours(chunk, cache, rows=[1], positions=positions[:, :, start:start + 16], **embeds))
        for t in range(length, ids.shape[1]):
            pieces.append(ours(ids[:, t:t + 1], cache, rows=[1]))
    assert cache.rope_deltas[0] == 0 and cache.rope_deltas[1] < 0
    assert rel_err(torch.cat(pieces, dim=1), full) < 1e-4


def test_reused_row_starts_with_plain_positions(models, prompt):
    ours, _ = models
    text = torch.randint(0, 250, (1, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        cache = ours.new_cache(1, prompt.ids.shape[1])
        ours(prompt.ids, cache, **prompt.media())
        cache.lengths[0] = 0  # what the engine's reset_row does, with the linear-attention state
        for store in (cache.conv, cache.recurrent):
            for state in store.values():
                state[0].zero_()
        logits = ours(text, cache)
        expected = ours(text)
    assert cache.rope_deltas == [0]
    assert rel_err(logits, expected) < 1e-5


def test_pad_count_mismatch_is_a_clear_error(models, prompt):
    ours, _ = models
    short = prompt.ids[:, :-30]  # cuts into the video's pads
    with pytest.raises(ValueError, match="video pad tokens"):
        ours(short, pixel_values_videos=prompt.pixel_values_videos, video_grid_thw=prompt.video_grid_thw)
    image_only = prompt.ids[:, :25]
    with pytest.raises(ValueError, match="image pad tokens"):
        ours(image_only, image_embeds=torch.zeros(3, 32), image_grid_thw=prompt.image_grid_thw)


def test_images_mid_sequence_need_positions(models, prompt):
    ours, _ = models
    cache = ours.new_cache(1, 200)
    with torch.no_grad():
        ours(torch.tensor([[1, 2, 3]]), cache)
        with pytest.raises(ValueError, match="multimodal_positions"):
            ours(prompt.ids, cache, **prompt.media())


def test_rope_index_refuses_leftover_grids():
    ids = torch.tensor([[1, TOKENS.image_pad, TOKENS.image_pad, 2]])
    kwargs = dict(image_token_id=TOKENS.image_pad, video_token_id=TOKENS.video_pad, spatial_merge_size=2)
    positions, deltas = rope_index(ids, image_grid_thw=[(1, 2, 4)], **kwargs)
    assert positions[:, 0].tolist() == [[0, 1, 1, 3], [0, 1, 1, 3], [0, 1, 2, 3]] and deltas.tolist() == [0]
    with pytest.raises(ValueError, match="left over"):
        rope_index(ids, image_grid_thw=[(1, 2, 4), (1, 2, 2)], **kwargs)
    with pytest.raises(ValueError, match="ends inside"):
        rope_index(ids, image_grid_thw=[(1, 4, 4)], **kwargs)
