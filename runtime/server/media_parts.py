"""Images and videos in chat requests: parse the content parts, fetch and preprocess off the event loop,
expand the prompt's placeholders, and hand the engine its MediaInputs.

Accepted parts: `image_url` (also `image`, `input_image`) and `video_url` (also `video`), each a
data: URL, an http(s) URL, or a local file when the operator allowed a directory; a video may
also be a list of frame URLs (`{"type": "video", "video": [url, ...]}`), taken as frames already
sampled at the video processor's fps. The request's top-level `mm_processor_kwargs` (fps,
num_frames, min/max_frames, min/max_pixels, size) may tighten the checkpoint's processor
configs. Media errors are the client's: 413 when a size, pixel or frame cap is exceeded, else 400.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwen35.planner.errors import InputError
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.server.errors import APIError, bad_request
from qwen35.runtime.vision import (
    ImageProcessorConfig,
    MediaPolicy,
    VideoProcessorConfig,
    VisionTokens,
    expand_prompt_ids,
    load_image,
    load_image_config,
    load_video,
    load_video_config,
    media_ref,
    preprocess_image,
    preprocess_video,
    video_from_frames,
    with_request_kwargs,
)

_IMAGE_KWARGS = ("min_pixels", "max_pixels", "size")
_VIDEO_KWARGS = ("fps", "num_frames", "min_frames", "max_frames", *_IMAGE_KWARGS)
# media.py and video.py word every cap the same way: "... over the N-byte limit" (or -pixel, -frame).
_OVER_LIMIT = re.compile(r"over the \d+-(byte|pixel|frame) limit|holds over \d+ bytes")


@dataclass(frozen=True)
class VisionServing:
    """What the server needs to take images and videos: processor configs, fetch policy, pad ids."""

    image_config: ImageProcessorConfig
    video_config: VideoProcessorConfig
    policy: MediaPolicy
    tokens: VisionTokens = VisionTokens()
    merge_size: int = 2

    @classmethod
    def from_checkpoint(cls, root: str | Path, policy: MediaPolicy, tokens: VisionTokens = VisionTokens(),
                        merge_size: int = 2) -> VisionServing:
        """The checkpoint's preprocessor_config.json and video_preprocessor_config.json with a policy."""
        return cls(load_image_config(root), load_video_config(root), policy, tokens, merge_size)


def vision_serving(root: str | Path, config: Any, policy: MediaPolicy) -> VisionServing | None:
    """VisionServing for a checkpoint (its CheckpointConfig), or None when it has no vision tower."""
    if config.vision is None:
        return None
    tokens = VisionTokens(config.image_token_id, config.video_token_id, config.vision_start_token_id,
                          config.vision_end_token_id)
    return VisionServing.from_checkpoint(root, policy, tokens, config.vision.spatial_merge_size)


@dataclass(frozen=True)
class MediaPart:
    """One image or video of a chat request: where it is, and the request field it came from."""

    kind: str  # "image" or "video"
    param: str  # e.g. messages[0].content[1], for error messages
    url: str | None = None
    frames: tuple[str, ...] = ()  # a video sent as frame URLs


def media_part(part: Mapping[str, Any], param: str) -> MediaPart | None:
    """The image or video a content part carries; None for kinds we do not take (audio, files)."""
    kind = part.get("type")
    for name in ("video", "video_url"):
        value = part.get(name)
        value = value.get("url") if isinstance(value, Mapping) else value
        if (kind == name or name in part) and isinstance(value, list):
            if not value or not all(isinstance(url, str) and url for url in value):
                raise bad_request(f"Invalid value for '{param}.{name}': a video given as frames is a non-empty "
                                  "list of image URLs.", param, "invalid_media")
            return MediaPart("video", param, frames=tuple(value))
    try:
        ref = media_ref(part)
    except InputError as error:
        raise bad_request(f"Invalid value for '{param}': {error.one_line()}.", param, "invalid_media") from None
    return None if ref is None else MediaPart(ref.kind, param, url=ref.url)


def _media_error(error: InputError, param: str) -> APIError:
    status, code = (413, "media_too_large") if _OVER_LIMIT.search(error.message) else (400, "invalid_media")
    return APIError(status, f"'{param}': {error.one_line()}.", param=param, code=code)


def _configs(vision: VisionServing, kwargs: Mapping[str, Any] | None) -> tuple[ImageProcessorConfig,
                                                                              VideoProcessorConfig]:
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(_VIDEO_KWARGS))
    if unknown:
        raise InputError(f"unsupported mm_processor_kwargs {', '.join(unknown)}",
                         f"use only {', '.join(_VIDEO_KWARGS)}")
    image_kwargs = {key: value for key, value in kwargs.items() if key in _IMAGE_KWARGS}
    return with_request_kwargs(vision.image_config, image_kwargs), with_request_kwargs(vision.video_config, kwargs)


def _load_part(part: MediaPart, vision: VisionServing, image_config: ImageProcessorConfig,
               video_config: VideoProcessorConfig) -> tuple[torch.Tensor, tuple[int, int, int], list[float]]:
    """One part fetched, decoded and preprocessed: (pixel patches, grid, per-group timestamps for videos)."""
    policy = vision.policy
    if part.kind == "image":
        patches, grid = preprocess_image(load_image(part.url, policy), image_config)
        return patches, grid, []
    if part.frames:
        if len(part.frames) > video_config.max_frames:
            raise InputError(f"the video has {len(part.frames)} frames, over the {video_config.max_frames}-frame "
                             "limit", "send fewer frames")
        decoded = video_from_frames([load_image(url, policy) for url in part.frames], fps=video_config.fps)
    else:
        decoded = load_video(part.url, policy, video_config)
    processed = preprocess_video(decoded, video_config)
    return processed.pixel_values, processed.grid_thw, processed.timestamps


def load_media(prompt_ids: list[int], parts: list[MediaPart], vision: VisionServing,
               kwargs: Mapping[str, Any] | None, encode: Callable[[str], list[int]]) -> tuple[list[int], MediaInputs]:
    """Fetch and preprocess every part (blocking), then expand the prompt's placeholders to match."""
    try:
        image_config, video_config = _configs(vision, kwargs)
    except InputError as error:
        raise bad_request(f"Invalid value for 'mm_processor_kwargs': {error.one_line()}.", "mm_processor_kwargs",
                          "invalid_value") from None
    images, videos = [], []
    for part in parts:
        try:
            (images if part.kind == "image" else videos).append(_load_part(part, vision, image_config, video_config))
        except InputError as error:
            raise _media_error(error, part.param) from None
    try:
        expanded = expand_prompt_ids(prompt_ids, image_grids=[grid for _, grid, _ in images],
                                     video_grids=[grid for _, grid, _ in videos],
                                     video_timestamps=[stamps for _, _, stamps in videos], encode=encode,
                                     tokens=vision.tokens, merge_size=vision.merge_size)
    except InputError as error:
        raise bad_request(f"Invalid value for 'messages': {error.one_line()}.", "messages", "invalid_media") from None
    media = MediaInputs(
        pixel_values=torch.cat([patches for patches, _, _ in images]) if images else None,
        image_grid_thw=[grid for _, grid, _ in images],
        pixel_values_videos=torch.cat([patches for patches, _, _ in videos]) if videos else None,
        video_grid_thw=[grid for _, grid, _ in videos])
    return expanded.ids, media


async def prepare_media(prompt_ids: list[int], parts: list[MediaPart], vision: VisionServing,
                        kwargs: Mapping[str, Any] | None,
                        encode: Callable[[str], list[int]]) -> tuple[list[int], MediaInputs]:
    """load_media in a worker thread, so downloads and decoding never block the event loop."""
    return await asyncio.to_thread(load_media, prompt_ids, parts, vision, kwargs, encode)
