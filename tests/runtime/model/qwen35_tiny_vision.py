"""A tiny random Qwen3.5 checkpoint with a vision tower whose special tokens fit the tiny vocab,
and a prompt with two images and a video made by the runtime's own preprocessing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qwen35.runtime.vision import (
    ImageProcessorConfig,
    VideoProcessorConfig,
    VisionTokens,
    expand_prompt_ids,
    preprocess_images,
    preprocess_video,
    video_from_frames,
)
from qwen35_tiny_checkpoints import randomize, text_config

TOKENS = VisionTokens(image_pad=300, video_pad=301, vision_start=302, vision_end=303)
# head_dim 8 (2 rotary frequencies per axis); a 4x4 learned grid, resampled up and down.
VISION = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
              num_position_embeddings=16, patch_size=4, temporal_patch_size=2, spatial_merge_size=2)
IMAGE_CONFIG = ImageProcessorConfig(patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=64, max_pixels=2048)
VIDEO_CONFIG = VideoProcessorConfig(patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=64, max_pixels=8192)


def build_hf_vision_model(seed: int = 11):
    """A random transformers Qwen3_5ForConditionalGeneration (dense, tied) with a 2-block vision tower."""
    import transformers

    cfg = transformers.Qwen3_5Config(
        text_config=text_config(False, True, 4, 2, 2, 4), vision_config=VISION, tie_word_embeddings=True,
        image_token_id=TOKENS.image_pad, video_token_id=TOKENS.video_pad,
        vision_start_token_id=TOKENS.vision_start, vision_end_token_id=TOKENS.vision_end)
    model = transformers.Qwen3_5ForConditionalGeneration(cfg)
    randomize(model, seed)
    return model.eval()


def encode_timestamp(text: str) -> list[int]:
    """Stand-in tokenizer for the '<1.5 seconds>' text between video frame groups."""
    return [40 + ord(c) % 200 for c in text]


@dataclass
class VisionPrompt:
    """Expanded prompt ids [1, T] and the media tensors transformers and ours both take."""

    ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor

    def mm_token_type_ids(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """transformers' per-token modality (0 text, 1 image, 2 video)."""
        ids = self.ids if ids is None else ids
        return (ids == TOKENS.image_pad).long() + 2 * (ids == TOKENS.video_pad).long()

    def media(self) -> dict[str, torch.Tensor]:
        """The keyword arguments both models accept."""
        return dict(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw,
                    pixel_values_videos=self.pixel_values_videos, video_grid_thw=self.video_grid_thw)


def vision_prompt(seed: int = 0) -> VisionPrompt:
    """Text, a 40x24 image, text, a 16x32 image, text, a 4-frame 24x16 video (2 frame groups), text."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (40, 24, 3), dtype=np.uint8), rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)]
    frames = [rng.integers(0, 256, (24, 16, 3), dtype=np.uint8) for _ in range(4)]
    processed = preprocess_images(images, IMAGE_CONFIG)
    video = preprocess_video(video_from_frames(frames, fps=2.0), VIDEO_CONFIG)

    def text(n):
        return rng.integers(0, 250, n).tolist()

    def wrap(pad):
        return [TOKENS.vision_start, pad, TOKENS.vision_end]

    ids = (text(5) + wrap(TOKENS.image_pad) + text(3) + wrap(TOKENS.image_pad) + text(4)
           + wrap(TOKENS.video_pad) + text(6))
    expanded = expand_prompt_ids(ids, image_grids=processed.grids(), video_grids=[video.grid_thw],
                                 video_timestamps=[video.timestamps], encode=encode_timestamp, tokens=TOKENS)
    return VisionPrompt(torch.tensor([expanded.ids]), processed.pixel_values, processed.image_grid_thw,
                        video.pixel_values, torch.tensor([video.grid_thw]))
