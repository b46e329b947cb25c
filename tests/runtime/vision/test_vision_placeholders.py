"""Placeholder expansion: the exact prompt ids transformers' Qwen3VLProcessor (Qwen3.5's processor) builds."""
import numpy as np
import pytest
from PIL import Image
from transformers.video_utils import VideoMetadata, read_video_pyav
from vision_hf_reference import encode_video, hf_processor, install_torchvision_stand_in, synthetic_frames

from qwen35.planner.errors import InputError
from qwen35.runtime.demo.config import preprocessor_config, video_preprocessor_config
from qwen35.runtime.tokenizer import load_tokenizer, write_demo_tokenizer
from qwen35.runtime.vision import (
    VisionTokens,
    decode_video,
    expand_prompt_ids,
    expand_prompt_text,
    image_config_from_dict,
    preprocess_images,
    preprocess_video,
    video_config_from_dict,
    video_from_frames,
)

IMAGE_RAW = {**preprocessor_config(), "size": {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}}
IMAGE_RAW.pop("min_pixels")
IMAGE_RAW.pop("max_pixels")
VIDEO_RAW = {**video_preprocessor_config(), "size": {"shortest_edge": 32 * 32, "longest_edge": 64 * 96 * 8}}
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vision_tokenizer")
    write_demo_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def reference(monkeypatch, tokenizer_dir):
    install_torchvision_stand_in(monkeypatch)
    return hf_processor(IMAGE_RAW, VIDEO_RAW, str(tokenizer_dir / "tokenizer.json"), monkeypatch)


def _images():
    return [Image.fromarray(synthetic_frames(1, height, width, seed)[0])
            for seed, (height, width) in enumerate([(50, 70), (200, 33), (9, 9)])]


def _ours(tokenizer, text, images, videos):
    processed = preprocess_images(images, image_config_from_dict(IMAGE_RAW))
    video_config = video_config_from_dict(VIDEO_RAW)
    clips = [preprocess_video(video, video_config) for video in videos]
    grids = dict(image_grids=processed.grids(), video_grids=[clip.grid_thw for clip in clips],
                 video_timestamps=[clip.timestamps for clip in clips])
    expanded = expand_prompt_ids(tokenizer.encode(text), encode=tokenizer.encode,
                                 tokens=VisionTokens.from_tokenizer(tokenizer), **grids)
    return expanded, expand_prompt_text(text, **grids)


def test_images_and_frame_list_video_match_transformers(tokenizer, reference):
    text = (f"<|im_start|>user\n{IMAGE}first{IMAGE}{VIDEO} and then {IMAGE}?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    images = _images()
    frames = [Image.fromarray(frame) for frame in synthetic_frames(5, 40, 60, seed=4)]
    expanded, expanded_text = _ours(tokenizer, text, images, [video_from_frames(frames, fps=3)])
    metadata = VideoMetadata(total_num_frames=5, fps=3.0, frames_indices=list(range(5)))
    out = reference(text=[text], images=images, videos=[frames], video_metadata=[metadata],
                    videos_kwargs={"do_sample_frames": False, "cap_pixels_per_frame": False})
    assert expanded.ids == out["input_ids"][0]
    assert tokenizer.encode(expanded_text) == out["input_ids"][0]
    assert "<0.2 seconds><|vision_start|>" in expanded_text and "<1.3 seconds><|vision_start|>" in expanded_text
    # Every pad id sits inside its item's span, and spans count them.
    kinds = {"image": VisionTokens().image_pad, "video": VisionTokens().video_pad}
    assert [(span.kind, span.item) for span in expanded.spans] == [("image", 0), ("image", 1), ("video", 0),
                                                                  ("image", 2)]
    for span in expanded.spans:
        inside = expanded.ids[span.start:span.end]
        assert inside.count(kinds[span.kind]) == span.num_tokens
    pads = np.isin(np.array(expanded.ids), list(kinds.values())).sum()
    assert pads == sum(span.num_tokens for span in expanded.spans)
    assert out["mm_token_type_ids"][0].count(1) + out["mm_token_type_ids"][0].count(2) == pads


def test_decoded_mp4_through_chat_template_matches_transformers(tokenizer, reference, tmp_path):
    data = encode_video(synthetic_frames(14, 48, 64, seed=2), fps=7)
    (tmp_path / "clip.mp4").write_bytes(data)
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                             {"type": "image_url", "image_url": {"url": "x.png"}},
                                             {"type": "text", "text": "What changes?"}]}]
    text = tokenizer.chat_template.render(messages, add_generation_prompt=True)
    assert text.count(VIDEO) == 1 and text.count(IMAGE) == 1
    image = _images()[:1]
    video_config = video_config_from_dict(VIDEO_RAW)
    expanded, _ = _ours(tokenizer, text, image, [decode_video(data, video_config)])
    processor = reference.video_processor
    frames, metadata = read_video_pyav(str(tmp_path / "clip.mp4"), sample_indices_fn=processor.sample_frames)
    out = reference(text=[text], images=image, videos=[frames], video_metadata=[metadata],
                    videos_kwargs={"do_sample_frames": False, "cap_pixels_per_frame": False})
    assert expanded.ids == out["input_ids"][0]


def test_counts_must_match_and_videos_need_encode():
    tokens = VisionTokens()
    ids = [1, tokens.image_pad, 2, tokens.video_pad]
    with pytest.raises(InputError, match="1 image placeholder"):
        expand_prompt_ids(ids, image_grids=[], video_grids=[(1, 2, 2)], video_timestamps=[[0.0]], encode=list)
    with pytest.raises(InputError, match="video placeholder"):
        expand_prompt_ids(ids, image_grids=[(1, 2, 2)])
    with pytest.raises(ValueError, match="encode"):
        expand_prompt_ids(ids, image_grids=[(1, 2, 2)], video_grids=[(1, 2, 2)], video_timestamps=[[0.0]])
    with pytest.raises(ValueError, match="timestamps"):
        expand_prompt_ids(ids, image_grids=[(1, 2, 2)], video_grids=[(2, 2, 2)], video_timestamps=[[0.0]],
                          encode=lambda text: [7])
    expanded = expand_prompt_ids(ids, image_grids=[(1, 4, 6)], video_grids=[(2, 2, 2)],
                                 video_timestamps=[[0.5, 1.5]], encode=lambda text: [7, 7])
    assert expanded.ids == [1] + [tokens.image_pad] * 6 + [2] + 2 * [7, 7, tokens.vision_start, tokens.video_pad,
                                                                     tokens.vision_end]
    assert [(span.start, span.end, span.num_tokens) for span in expanded.spans] == [(1, 7, 6), (8, 18, 2)]
    # The template's wrapped pad is replaced whole: each group brings its own start and end.
    wrapped = [1, tokens.vision_start, tokens.video_pad, tokens.vision_end, 2]
    expanded = expand_prompt_ids(wrapped, video_grids=[(1, 2, 2)], video_timestamps=[[0.5]], encode=lambda text: [7])
    assert expanded.ids == [1, 7, tokens.vision_start, tokens.video_pad, tokens.vision_end, 2]
    assert [(span.start, span.end) for span in expanded.spans] == [(1, 5)]
    text = f"a{VIDEO}b<|vision_start|><|video_pad|>"
    assert expand_prompt_text(text, video_grids=[(1, 2, 2), (1, 2, 2)], video_timestamps=[[0.5], [1.0]]) == (
        f"a<0.5 seconds>{VIDEO}b<|vision_start|><1.0 seconds>{VIDEO}")
