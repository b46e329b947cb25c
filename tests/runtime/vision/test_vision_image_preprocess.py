"""Image preprocessing against transformers' Qwen2VLImageProcessorPil: pixel_values, grids, smart resize."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
from vision_hf_reference import hf_image_processor, synthetic_frames

from qwen35.planner.errors import InputError
from qwen35.runtime.demo.config import preprocessor_config
from qwen35.runtime.vision import (
    ImageProcessorConfig,
    image_config_from_dict,
    load_image_config,
    num_image_tokens,
    preprocess_image,
    preprocess_images,
    smart_resize,
)
from qwen35.runtime.vision.preprocess import patchify

SMALL_BUDGET = {**preprocessor_config(), "size": {"shortest_edge": 32 * 32, "longest_edge": 160 * 160}}
SMALL_BUDGET.pop("min_pixels")
SMALL_BUDGET.pop("max_pixels")


def _image(height, width, seed=0, mode="RGB"):
    array = synthetic_frames(1, height, width, seed)[0]
    image = Image.fromarray(array)
    if mode == "RGBA":
        alpha = np.linspace(0, 255, height * width).reshape(height, width).astype(np.uint8)
        image = Image.fromarray(np.dstack([array, alpha]), "RGBA")
    elif mode != "RGB":
        image = image.convert(mode)
    return image


def _compare(images, raw):
    ours = preprocess_images(images, image_config_from_dict(raw))
    reference = hf_image_processor(raw)(images=images)
    assert ours.pixel_values.dtype == torch.float32
    assert ours.image_grid_thw.tolist() == reference["image_grid_thw"].tolist()
    expected = torch.from_numpy(np.asarray(reference["pixel_values"]))
    assert ours.pixel_values.shape == expected.shape
    torch.testing.assert_close(ours.pixel_values, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("height,width", [(37, 53), (3, 5), (300, 97), (97, 300), (64, 64), (31, 1000)])
def test_pixel_values_match_transformers_with_qwen35_config(height, width):
    _compare([_image(height, width)], preprocessor_config())


@pytest.mark.parametrize("height,width", [(480, 640), (641, 203), (1200, 900), (40, 7)])
def test_downscale_and_upscale_paths_match_transformers(height, width):
    _compare([_image(height, width, seed=height)], SMALL_BUDGET)


def test_large_image_matches_transformers():
    _compare([_image(1100, 1500, seed=3)], preprocessor_config())


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK"])
def test_colour_modes_convert_like_transformers(mode):
    _compare([_image(45, 61, seed=1, mode=mode)], SMALL_BUDGET)


def test_batch_concatenates_in_order():
    images = [_image(50, 70, 1), _image(90, 33, 2), _image(64, 64, 3)]
    _compare(images, SMALL_BUDGET)
    ours = preprocess_images(images, image_config_from_dict(SMALL_BUDGET))
    sizes = [t * h * w for t, h, w in ours.grids()]
    assert ours.pixel_values.shape[0] == sum(sizes)
    second, grid = preprocess_image(images[1], image_config_from_dict(SMALL_BUDGET))
    torch.testing.assert_close(ours.pixel_values[sizes[0]:sizes[0] + sizes[1]], second, rtol=0, atol=0)
    assert grid == ours.grids()[1]


def test_uint8_arrays_match_pil_input():
    config = image_config_from_dict(SMALL_BUDGET)
    image = _image(45, 61)
    from_pil, _ = preprocess_image(image, config)
    from_array, _ = preprocess_image(np.asarray(image), config)
    grey, _ = preprocess_image(np.asarray(image.convert("L")), config)
    grey_pil, _ = preprocess_image(image.convert("L"), config)
    torch.testing.assert_close(from_array, from_pil, rtol=0, atol=0)
    torch.testing.assert_close(grey, grey_pil, rtol=0, atol=0)
    with pytest.raises(InputError):
        preprocess_image(np.zeros((8, 8, 3), dtype=np.float32), config)


def test_patch_layout_is_channel_then_time_then_pixels():
    # Patch 0 of a 2x2-merge image is the top-left 16x16 block, patch 1 the one to its right.
    config = ImageProcessorConfig(min_pixels=64 * 64, max_pixels=64 * 64, do_normalize=False, do_rescale=False)
    array = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    patches, grid = preprocess_image(array, config)
    assert grid == (1, 4, 4) and patches.shape == (16, config.patch_dim)
    first = patches[0].reshape(3, 2, 16, 16)
    assert torch.equal(first[:, 0], first[:, 1])
    assert torch.equal(first[:, 0], torch.from_numpy(array[:16, :16]).permute(2, 0, 1).float())
    second = patches[1].reshape(3, 2, 16, 16)[:, 0]
    assert torch.equal(second, torch.from_numpy(array[:16, 16:32]).permute(2, 0, 1).float())
    third = patches[2].reshape(3, 2, 16, 16)[:, 0]  # bottom-left of the first 2x2 window
    assert torch.equal(third, torch.from_numpy(array[16:32, :16]).permute(2, 0, 1).float())


def test_patchify_matches_transformers_video_layout():
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    frames = torch.randn(4, 3, 64, 96)
    ours = patchify(frames, patch_size=16, merge_size=2, temporal_patch_size=2)
    reference, *_ = Qwen3VLVideoProcessor.patchify(None, frames[None], patch_size=16, merge_size=2,
                                                   temporal_patch_size=2)
    torch.testing.assert_close(ours, reference[0], rtol=0, atol=0)


def test_smart_resize_matches_transformers_on_many_sizes():
    rng = np.random.default_rng(7)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 5000, (400, 2)) if max(h, w) / min(h, w) <= 200]
    for min_pixels, max_pixels in [(65536, 16777216), (1024, 25600), (4096, 4096 * 4)]:
        for height, width in sizes:
            ours = smart_resize(height, width, factor=32, min_pixels=min_pixels, max_pixels=max_pixels)
            assert ours == hf_smart_resize(height, width, factor=32, min_pixels=min_pixels, max_pixels=max_pixels)
    with pytest.raises(InputError, match="aspect ratio"):
        smart_resize(2, 500, factor=32, min_pixels=1024, max_pixels=25600)


def test_token_count_without_decoding():
    config = image_config_from_dict(preprocessor_config())
    image = _image(300, 97)
    _, (grid_t, grid_h, grid_w) = preprocess_image(image, config)
    assert num_image_tokens(300, 97, config) == grid_t * grid_h * grid_w // 4
    assert hf_image_processor(preprocessor_config()).get_number_of_image_patches(300, 97) == grid_h * grid_w


def test_config_loading(tmp_path):
    assert load_image_config(tmp_path) == ImageProcessorConfig()  # no file: Qwen3.5's values
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config()))
    config = load_image_config(tmp_path)
    assert (config.min_pixels, config.max_pixels, config.patch_size, config.factor) == (65536, 16777216, 16, 32)
    # Top-level min/max_pixels override size, as in transformers' Qwen2-VL image processor.
    raw = {"size": {"shortest_edge": 100, "longest_edge": 200000}, "min_pixels": 3000}
    assert (image_config_from_dict(raw).min_pixels, image_config_from_dict(raw).max_pixels) == (3000, 200000)
    reference = hf_image_processor(raw)
    assert (reference.size.shortest_edge, reference.size.longest_edge) == (3000, 200000)
    with pytest.raises(InputError):
        image_config_from_dict({"patch_size": 0})
    with pytest.raises(InputError):
        image_config_from_dict({"size": {"shortest_edge": 9000, "longest_edge": 100}})
