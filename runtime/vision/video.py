"""Video input: decode with PyAV, sample frames by fps, resize and patchify as Qwen3-VL's video processor does.

Semantics follow transformers' Qwen3VLVideoProcessor (the class Qwen3.5's
video_preprocessor_config.json names): frame count = duration x fps clamped to
[min_frames, max_frames] and to the frames the clip has, indices spread uniformly with
numpy's rounding; one resize for the whole clip chosen from (frames, height, width) and the
pixel budget; bicubic antialiased resize of the uint8 frames with torch's kernel (what
torchvision runs on CPU); an odd frame count is padded by repeating the last frame; each
pair of frames becomes one temporal group whose timestamp is the mean of its two frames' times.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from qwen35.planner.errors import InputError
from qwen35.runtime.vision.preprocess import (
    IMAGE_CONFIG_FILE,
    ImageInput,
    ImageProcessorConfig,
    patchify,
    pixel_bounds,
    read_json_config,
    rgb_array,
    shared_fields,
)

VIDEO_CONFIG_FILE = "video_preprocessor_config.json"
FALLBACK_FPS = 24.0  # what transformers assumes when a clip carries no frame rate
_TORCH_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class VideoProcessorConfig(ImageProcessorConfig):
    """video_preprocessor_config.json: the image fields plus frame sampling (defaults are Qwen3.5's)."""

    min_pixels: int = 4096
    max_pixels: int = 25165824
    fps: float | None = 2.0
    num_frames: int | None = None
    min_frames: int = 4
    max_frames: int = 768
    do_sample_frames: bool = True
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 768


def video_config_from_dict(raw: Mapping[str, Any]) -> VideoProcessorConfig:
    """Build the video config from video_preprocessor_config.json's dict (`size` sets the pixel budget)."""
    defaults = VideoProcessorConfig()
    low, high = pixel_bounds(raw, (defaults.min_pixels, defaults.max_pixels), pixels_override_size=False)
    fps = raw.get("fps", defaults.fps)
    num_frames = raw.get("num_frames")
    return VideoProcessorConfig(
        min_pixels=low, max_pixels=high,
        fps=None if fps is None else _positive(fps, "fps", float),
        num_frames=None if num_frames is None else _positive(num_frames, "num_frames", int),
        min_frames=_positive(raw.get("min_frames", defaults.min_frames), "min_frames", int),
        max_frames=_positive(raw.get("max_frames", defaults.max_frames), "max_frames", int),
        do_sample_frames=bool(raw.get("do_sample_frames", True)),
        cap_pixels_per_frame=bool(raw.get("cap_pixels_per_frame") or False),
        max_video_tokens=_positive(raw.get("max_video_tokens", defaults.max_video_tokens), "max_video_tokens", int),
        **shared_fields(raw, defaults),
    )


_MAX_SETTING = 2 ** 53


def _positive(value: Any, name: str, kind: type) -> Any:
    # The cap keeps float() exact and finite: a request may send a 4,000-digit integer.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= _MAX_SETTING
    if not ok or (kind is int and not float(value).is_integer()):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InputError(f"{name} must be a positive {'integer' if kind is int else 'number'} up to 2**53, got "
                         f"{shown}", "fix the video processor config or the request's mm_processor_kwargs")
    return kind(value)


def load_video_config(checkpoint_dir: str | Path) -> VideoProcessorConfig:
    """The checkpoint's video config: video_preprocessor_config.json, else preprocessor_config.json, else defaults."""
    for name in (VIDEO_CONFIG_FILE, IMAGE_CONFIG_FILE):
        path = Path(checkpoint_dir) / name
        if path.is_file():
            return video_config_from_dict(read_json_config(path))
    return VideoProcessorConfig()


def sample_frame_indices(total_frames: int, video_fps: float | None, config: VideoProcessorConfig) -> list[int]:
    """Which decoded frames to keep: num_frames if set, else duration x fps, clamped as Qwen3-VL does."""
    if total_frames <= 0:
        raise InputError("the video has no frames", "send a video with at least one frame")
    if not config.do_sample_frames:
        return list(range(total_frames))
    count = config.num_frames
    if count is None and config.fps is not None:
        rate = video_fps or FALLBACK_FPS
        count = int(total_frames / rate * config.fps)
        count = min(max(count, config.min_frames), config.max_frames, total_frames)
    elif count is None:
        count = min(max(total_frames, config.min_frames), config.max_frames)
    # An explicit num_frames above the clip's length would only repeat frames.
    count = min(count, total_frames)
    return np.linspace(0, total_frames - 1, count).round().astype(int).tolist()


def frame_timestamps(frame_indices: Sequence[int], video_fps: float | None, temporal_patch_size: int) -> list[float]:
    """Seconds for each temporal group: the mean of its first and last frame's time (last frame repeats to fill)."""
    rate = video_fps or FALLBACK_FPS
    indices = [int(index) for index in frame_indices]
    if len(indices) % temporal_patch_size:
        indices.extend([indices[-1]] * (temporal_patch_size - len(indices) % temporal_patch_size))
    seconds = [index / rate for index in indices]
    return [(seconds[start] + seconds[start + temporal_patch_size - 1]) / 2
            for start in range(0, len(seconds), temporal_patch_size)]


def video_smart_resize(num_frames: int, height: int, width: int, config: VideoProcessorConfig) -> tuple[int, int]:
    """Target (height, width) for every frame: multiples of 32 with frames x pixels inside the budget."""
    factor, temporal = config.factor, config.temporal_patch_size
    # A single frame is padded to a full temporal patch, so it is budgeted as one.
    num_frames = max(num_frames, temporal)
    max_pixels = config.max_pixels
    if config.cap_pixels_per_frame:
        per_frame = max(min(config.max_video_tokens * factor * factor, config.max_pixels // num_frames),
                        int(config.min_pixels * 1.05))
        max_pixels = per_frame * num_frames
    if min(height, width) <= 0:
        raise InputError(f"video frames have no pixels ({width}x{height})", "send a non-empty video")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise InputError(f"video aspect ratio {max(height, width) / min(height, width):.0f}:1 is over 200:1",
                         "crop or pad the video to a squarer shape")
    resized_height = round(height / factor) * factor
    resized_width = round(width / factor) * factor
    padded_frames = round(num_frames / temporal) * temporal
    if padded_frames * resized_height * resized_width > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        resized_height = max(factor, math.floor(height / beta / factor) * factor)
        resized_width = max(factor, math.floor(width / beta / factor) * factor)
    elif padded_frames * resized_height * resized_width < config.min_pixels:
        beta = math.sqrt(config.min_pixels / (num_frames * height * width))
        resized_height = math.ceil(height * beta / factor) * factor
        resized_width = math.ceil(width * beta / factor) * factor
    return resized_height, resized_width


def resize_frames(frames: torch.Tensor, size: tuple[int, int], resample: int = 3) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> uint8 [T, 3, *size] with torch's antialiased kernel (torchvision's CPU path)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    mode = _TORCH_MODES.get(resample, "bicubic")
    if mode == "nearest":
        return F.interpolate(frames, size=list(size), mode=mode)
    return F.interpolate(frames, size=list(size), mode=mode, align_corners=False, antialias=True)


@dataclass(frozen=True)
class DecodedVideo:
    """Sampled RGB frames (uint8 [T, H, W, 3]) with the decoded index and source frame rate they came from."""

    frames: np.ndarray
    frame_indices: list[int]
    fps: float | None
    total_frames: int


def video_from_frames(frames: Sequence[ImageInput], *, fps: float | None = None) -> DecodedVideo:
    """A clip from frames the caller already chose (PIL images or uint8 arrays), used as given, not resampled."""
    if not frames:
        raise InputError("the frame list is empty", "send at least one frame")
    arrays = [rgb_array(frame) for frame in frames]
    if len({array.shape for array in arrays}) != 1:
        raise InputError("video frames differ in size", "send frames of one size")
    if fps is not None:
        fps = _positive(fps, "fps", float)
    return DecodedVideo(np.stack(arrays), list(range(len(arrays))), fps, len(arrays))


def container_format(data: bytes) -> str:
    """FFmpeg demuxer for the file's magic bytes; only MP4/MOV, Matroska/WebM and AVI are accepted.

    Naming the demuxer keeps FFmpeg from probing formats that open further files or URLs
    (playlists, concat lists) on the server's behalf.
    """
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    raise InputError("the video container is not MP4/MOV, WebM/MKV or AVI", "send an mp4, webm, mkv or avi file")


def _count_frames(data: bytes, container_name: str) -> int:
    import av

    with av.open(io.BytesIO(data), format=container_name) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def decode_video(data: bytes, config: VideoProcessorConfig, *, max_frame_pixels: int | None = None,
                 max_total_frames: int | None = None) -> DecodedVideo:
    """Decode a video file's bytes, keeping the sampled frames already resized to the processor's target size."""
    import av

    container_name = container_format(data)
    try:
        with av.open(io.BytesIO(data), format=container_name) as container:
            if not container.streams.video:
                raise InputError("the file has no video stream", "send a video file (mp4, webm, mkv, ...)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if max_frame_pixels is not None and width * height > max_frame_pixels:
                raise InputError(f"video frames are {width}x{height}, over the {max_frame_pixels}-pixel limit",
                                 "send a lower-resolution video")
            total = stream.frames or _count_frames(data, container_name)
            if max_total_frames is not None and total > max_total_frames:
                raise InputError(f"video has {total} frames, over the {max_total_frames}-frame limit",
                                 "send a shorter clip")
            fps = float(stream.average_rate) if stream.average_rate else None
            indices = sample_frame_indices(total, fps, config)
            target = video_smart_resize(len(indices), height, width, config) if config.do_resize else None
            wanted, last = set(indices), indices[-1]
            stream.thread_type = "AUTO"
            kept: list[torch.Tensor] = []
            for position, frame in enumerate(container.decode(stream)):
                if position > last:
                    break
                if position in wanted:
                    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].contiguous()
                    if target is not None:
                        rgb = resize_frames(rgb, target, config.resample)
                    kept.append(rgb.permute(0, 2, 3, 1))
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise InputError(f"cannot decode the video: {exc}", "send a valid video file (mp4, webm, mkv, ...)") from exc
    if not kept:
        raise InputError("no frames could be decoded from the video", "send a valid, non-empty video")
    # A stream that ends early keeps the frames it had; their indices are the first ones wanted.
    return DecodedVideo(torch.cat(kept).numpy(), indices[:len(kept)], fps, total)


@dataclass(frozen=True)
class ProcessedVideo:
    """pixel_values [grid_t*grid_h*grid_w, patch_dim] float32, (grid_t, grid_h, grid_w), seconds per group."""

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    timestamps: list[float]


def preprocess_video(video: DecodedVideo, config: VideoProcessorConfig) -> ProcessedVideo:
    """Resize, normalise and patchify a decoded clip; grid_t counts pairs of frames."""
    # Channels-first contiguous, the layout the reference hands to the resize kernel.
    frames = torch.from_numpy(np.ascontiguousarray(video.frames)).permute(0, 3, 1, 2).contiguous()
    count, _, height, width = frames.shape
    if config.do_resize:
        frames = resize_frames(frames, video_smart_resize(count, height, width, config), config.resample)
    elif height % config.factor or width % config.factor:
        raise InputError(f"video frames are {width}x{height}, not a multiple of {config.factor}, and resizing is off",
                         "enable do_resize in the video processor config")
    values = frames.to(torch.float32)
    if config.do_normalize:
        # Rescale folded into the normalisation, as the reference processor does it.
        scale = 1.0 / config.rescale_factor if config.do_rescale else 1.0
        mean = (torch.tensor(config.image_mean) * scale).view(1, 3, 1, 1)
        std = (torch.tensor(config.image_std) * scale).view(1, 3, 1, 1)
        values = (values - mean) / std
    elif config.do_rescale:
        values = values * config.rescale_factor
    if pad := -count % config.temporal_patch_size:
        values = torch.cat([values, values[-1:].expand(pad, -1, -1, -1)])
    patches = patchify(values, patch_size=config.patch_size, merge_size=config.merge_size,
                       temporal_patch_size=config.temporal_patch_size)
    grid = (values.shape[0] // config.temporal_patch_size, values.shape[2] // config.patch_size,
            values.shape[3] // config.patch_size)
    timestamps = frame_timestamps(video.frame_indices, video.fps, config.temporal_patch_size)
    return ProcessedVideo(patches.contiguous(), grid, timestamps)


_REQUEST_KEYS = {"min_pixels", "max_pixels", "size", "fps", "num_frames", "min_frames", "max_frames"}


def with_request_kwargs(config: ImageProcessorConfig, kwargs: Mapping[str, Any] | None) -> Any:
    """Apply a request's mm_processor_kwargs; limits may tighten the checkpoint's config, never loosen it."""
    if not kwargs:
        return config
    is_video = isinstance(config, VideoProcessorConfig)
    allowed = _REQUEST_KEYS if is_video else {"min_pixels", "max_pixels", "size"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError(f"unsupported mm_processor_kwargs {', '.join(unknown)}",
                         f"use only {', '.join(sorted(allowed))}")
    changes: dict[str, Any] = {}
    size = kwargs.get("size")
    if size is not None:
        if not isinstance(size, Mapping):
            raise InputError("mm_processor_kwargs size must be an object",
                             'use {"shortest_edge": N, "longest_edge": N}')
        changes["min_pixels"] = _positive(size.get("shortest_edge", config.min_pixels), "size.shortest_edge", int)
        changes["max_pixels"] = _positive(size.get("longest_edge", config.max_pixels), "size.longest_edge", int)
    for key in ("min_pixels", "max_pixels", "num_frames", "min_frames", "max_frames"):
        if kwargs.get(key) is not None:
            changes[key] = _positive(kwargs[key], key, int)
    if kwargs.get("fps") is not None:
        changes["fps"] = _positive(kwargs["fps"], "fps", float)
    if "fps" in changes and "num_frames" in changes:
        raise InputError("fps and num_frames are mutually exclusive", "send one of them")
    if changes.get("max_pixels", 0) > config.max_pixels:
        raise InputError(f"max_pixels {changes['max_pixels']} is over this server's {config.max_pixels}",
                         f"ask for at most {config.max_pixels}")
    limit = getattr(config, "max_frames", 0)
    for key in ("max_frames", "num_frames", "min_frames"):
        if changes.get(key, 0) > limit:
            raise InputError(f"{key} {changes[key]} is over this server's max_frames {limit}",
                             f"ask for at most {limit} frames")
    merged = replace(config, **changes)
    if merged.min_pixels > merged.max_pixels:
        raise InputError(f"min_pixels {merged.min_pixels} exceeds max_pixels {merged.max_pixels}",
                         "raise max_pixels or lower min_pixels")
    if is_video and merged.min_frames > merged.max_frames:
        raise InputError(f"min_frames {merged.min_frames} exceeds max_frames {merged.max_frames}",
                         "raise max_frames or lower min_frames")
    return merged
