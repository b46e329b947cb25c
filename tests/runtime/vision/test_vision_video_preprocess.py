"""Video decoding, frame sampling and patches against transformers' Qwen3VLVideoProcessor and PyAV reader."""
import json
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as hf_video_smart_resize
from transformers.video_utils import VideoMetadata, read_video_pyav
from vision_hf_reference import encode_video, hf_video_processor, install_torchvision_stand_in, synthetic_frames

from qwen35.planner.errors import InputError
from qwen35.runtime.demo.config import video_preprocessor_config
from qwen35.runtime.vision import (
    VideoProcessorConfig,
    decode_video,
    frame_timestamps,
    load_video_config,
    preprocess_video,
    sample_frame_indices,
    video_config_from_dict,
    video_from_frames,
    video_smart_resize,
    with_request_kwargs,
)

SMALL_BUDGET = {**video_preprocessor_config(), "size": {"shortest_edge": 32 * 32 * 4, "longest_edge": 64 * 96 * 8}}


@pytest.fixture
def stand_in(monkeypatch):
    install_torchvision_stand_in(monkeypatch)


@pytest.fixture(scope="module")
def clip():
    """A 12-frame 48x80 mp4 at 6 fps."""
    return encode_video(synthetic_frames(12, 48, 80, seed=5), fps=6)


def _reference_from_file(path, raw, **sampling):
    processor = hf_video_processor(raw)
    frames, metadata = read_video_pyav(str(path), sample_indices_fn=partial(processor.sample_frames, **sampling))
    out = processor(videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_metadata=True,
                    cap_pixels_per_frame=raw.get("cap_pixels_per_frame", False))
    return out, metadata


def _assert_same(ours, out, metadata, processor_cls=Qwen3VLProcessor):
    assert list(ours.grid_thw) == out["video_grid_thw"][0].tolist()
    expected = out["pixel_values_videos"]
    assert ours.pixel_values.shape == expected.shape
    torch.testing.assert_close(ours.pixel_values, expected, rtol=0, atol=1e-5)
    stamps = processor_cls._calculate_timestamps(None, list(metadata.frames_indices), metadata.fps, 2)
    assert ours.timestamps == stamps


@pytest.mark.parametrize("raw", [video_preprocessor_config(), SMALL_BUDGET], ids=["qwen35", "small_budget"])
def test_decoded_mp4_matches_transformers(stand_in, tmp_path, clip, raw):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    config = video_config_from_dict(raw)
    decoded = decode_video(clip, config)
    out, metadata = _reference_from_file(path, raw)
    assert decoded.frame_indices == list(metadata.frames_indices) == [0, 4, 7, 11]  # 2 s at 2 fps -> 4 frames
    assert decoded.fps == metadata.fps == 6.0 and decoded.total_frames == 12
    _assert_same(preprocess_video(decoded, config), out, metadata)


def test_num_frames_and_odd_counts_match_transformers(stand_in, tmp_path, clip):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    raw = {**SMALL_BUDGET, "num_frames": 5}
    config = video_config_from_dict(raw)
    processed = preprocess_video(decode_video(clip, config), config)
    out, metadata = _reference_from_file(path, raw, fps=None, num_frames=5)
    assert len(metadata.frames_indices) == 5 and processed.grid_thw[0] == 3  # the 5th frame is repeated
    _assert_same(processed, out, metadata)


def test_per_frame_pixel_cap_matches_transformers(stand_in, tmp_path, clip):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    raw = {**video_preprocessor_config(), "cap_pixels_per_frame": True, "max_video_tokens": 4}
    config = video_config_from_dict(raw)
    out, metadata = _reference_from_file(path, raw)
    _assert_same(preprocess_video(decode_video(clip, config), config), out, metadata)


@pytest.mark.parametrize("count,height,width", [(5, 40, 60), (4, 20, 12), (2, 90, 30)])
def test_frame_list_matches_transformers(stand_in, count, height, width):
    frames = [Image.fromarray(frame) for frame in synthetic_frames(count, height, width, seed=count)]
    config = video_config_from_dict(SMALL_BUDGET)
    ours = preprocess_video(video_from_frames(frames, fps=4), config)
    metadata = VideoMetadata(total_num_frames=count, fps=4.0, frames_indices=list(range(count)))
    out = hf_video_processor(SMALL_BUDGET)(videos=[frames], video_metadata=[metadata], do_sample_frames=False,
                                           return_metadata=True, cap_pixels_per_frame=False)
    _assert_same(ours, out, metadata)


def test_sampling_matches_transformers():
    raw = video_preprocessor_config()
    processor = hf_video_processor(raw)
    for total in (1, 3, 4, 9, 30, 61, 1000, 5000):
        for fps in (None, 1.0, 2.5, 24.0, 29.97):
            for sampling in ({}, {"fps": 0.5}, {"fps": 7}):
                metadata = VideoMetadata(total_num_frames=total, fps=fps)
                config = video_config_from_dict({**raw, **sampling})
                expected = processor.sample_frames(metadata, **sampling).tolist()
                assert sample_frame_indices(total, fps, config) == expected, (total, fps, sampling)
        for num_frames in (1, 2, 7, 16):
            config = video_config_from_dict({**raw, "num_frames": num_frames})
            expected = processor.sample_frames(VideoMetadata(total_num_frames=total, fps=30.0),
                                               num_frames=min(num_frames, total), fps=None).tolist()
            assert sample_frame_indices(total, 30.0, config) == expected


def test_timestamps_and_resize_match_transformers():
    for indices, fps in (([0, 4, 7, 11], 6.0), ([0, 3, 5], 2.0), ([2], None), (list(range(0, 90, 7)), 29.97)):
        expected = Qwen3VLProcessor._calculate_timestamps(None, list(indices), fps or 24, 2)
        assert frame_timestamps(indices, fps, 2) == expected
    config = video_config_from_dict(video_preprocessor_config())
    rng = np.random.default_rng(3)
    for frames, height, width in rng.integers([2, 20, 20], [200, 3000, 3000], (300, 3)):
        expected = hf_video_smart_resize(int(frames), int(height), int(width), temporal_factor=2, factor=32,
                                         min_pixels=config.min_pixels, max_pixels=config.max_pixels)
        assert video_smart_resize(int(frames), int(height), int(width), config) == expected


def test_bad_video_bytes_are_input_errors(clip):
    config = VideoProcessorConfig()
    with pytest.raises(InputError, match="container"):
        decode_video(b"definitely not a video", config)
    with pytest.raises(InputError, match="decode"):
        decode_video(clip[:8] + b"\x00" * 64, config)
    with pytest.raises(InputError, match="frame limit|-frame limit"):
        decode_video(clip, config, max_total_frames=10)
    with pytest.raises(InputError, match="pixel limit"):
        decode_video(clip, config, max_frame_pixels=48 * 80 - 1)
    with pytest.raises(InputError, match="differ in size"):
        video_from_frames([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)])


def test_webm_container_decodes():
    frames = synthetic_frames(6, 32, 48, seed=9)
    data = encode_video(frames, fps=3, container="webm", codec="libvpx-vp9")
    decoded = decode_video(data, video_config_from_dict(SMALL_BUDGET))
    assert decoded.frame_indices == [0, 2, 3, 5] and decoded.frames.shape[0] == 4


def test_config_loading_and_request_kwargs(tmp_path):
    assert load_video_config(tmp_path) == VideoProcessorConfig()
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(video_preprocessor_config()))
    config = load_video_config(tmp_path)
    assert (config.min_pixels, config.max_pixels, config.fps, config.min_frames, config.max_frames) == \
           (4096, 25165824, 2.0, 4, 768)
    tighter = with_request_kwargs(config, {"fps": 1, "max_frames": 32, "max_pixels": 1 << 20})
    assert (tighter.fps, tighter.max_frames, tighter.max_pixels) == (1.0, 32, 1 << 20)
    assert with_request_kwargs(config, {"num_frames": 8}).num_frames == 8
    for bad in ({"fps": 1, "num_frames": 4}, {"max_pixels": 1 << 30}, {"max_frames": 5000}, {"fps": -1},
                {"resample": 0}, {"min_pixels": 1 << 25}):
        with pytest.raises(InputError):
            with_request_kwargs(config, bad)
