"""transformers' Qwen2-VL / Qwen3-VL processors as test references, runnable without torchvision.

The image reference is Qwen2VLImageProcessorPil, used as is. Qwen3VLVideoProcessor calls
torchvision's functional module (`tvF`) for three things, and torchvision cannot be installed
beside this torch build, so `install_torchvision_stand_in` puts a stand-in in its place:
  resize           -> torch.nn.functional.interpolate on the uint8 frames with antialias and
                      align_corners=False, which is exactly what torchvision's resize runs for
                      uint8 bicubic on CPU (and the identity when the size is unchanged);
  normalize        -> (x - mean) / std per channel;
  grayscale_to_rgb -> repeat a single channel three times.
Everything else (frame sampling, smart resize, padding, patch order, metadata, timestamps,
placeholder text) is transformers' own code.
"""
from __future__ import annotations

import enum
import io
import types

import av
import numpy as np
import torch
import torch.nn.functional as F


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


def _resize(image, size, interpolation=_InterpolationMode.BILINEAR, antialias=True):
    if tuple(size) == tuple(image.shape[-2:]):
        return image
    flat = image.reshape(-1, *image.shape[-3:])
    out = F.interpolate(flat, size=list(size), mode=interpolation.value, align_corners=False, antialias=antialias)
    return out.reshape(*image.shape[:-2], *out.shape[-2:])


def _normalize(image, mean, std, inplace=False):
    mean = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image - mean) / std


def _grayscale_to_rgb(image):
    return image if image.shape[-3] == 3 else image.repeat_interleave(3, dim=-3)


def install_torchvision_stand_in(monkeypatch) -> None:
    """Point transformers' torchvision hooks at the stand-in for the duration of one test."""
    import transformers.image_processing_backends as backends
    import transformers.models.qwen3_vl.video_processing_qwen3_vl as qwen3_vl_video
    import transformers.video_processing_utils as video_utils
    from transformers.image_utils import PILImageResampling

    stand_in = types.SimpleNamespace(InterpolationMode=_InterpolationMode, resize=_resize, normalize=_normalize,
                                     grayscale_to_rgb=_grayscale_to_rgb)
    for module in (backends, video_utils, qwen3_vl_video):
        monkeypatch.setattr(module, "tvF", stand_in, raising=False)
    modes = {PILImageResampling.NEAREST: _InterpolationMode.NEAREST,
             PILImageResampling.BILINEAR: _InterpolationMode.BILINEAR,
             PILImageResampling.BICUBIC: _InterpolationMode.BICUBIC}
    monkeypatch.setattr(backends, "pil_torch_interpolation_mapping", modes, raising=False)


def hf_config(raw: dict) -> dict:
    """A processor config dict without the class-naming keys the constructors reject."""
    return {key: value for key, value in raw.items()
            if key not in ("image_processor_type", "video_processor_type", "processor_class")}


def hf_image_processor(raw: dict):
    """Qwen2VLImageProcessorPil built from a preprocessor_config.json dict."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(**hf_config(raw))


def hf_video_processor(raw: dict):
    """Qwen3VLVideoProcessor built from a video_preprocessor_config.json dict (needs the stand-in to run)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor(**hf_config(raw))


def hf_processor(image_raw: dict, video_raw: dict, tokenizer_json: str, monkeypatch):
    """Qwen3VLProcessor (the class Qwen3.5 maps to) over our demo tokenizer.json."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    # Its type check looks BaseVideoProcessor up through transformers' torchvision-gated exports.
    monkeypatch.setattr(Qwen3VLProcessor, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json)
    return Qwen3VLProcessor(image_processor=hf_image_processor(image_raw), tokenizer=tokenizer,
                            video_processor=hf_video_processor(video_raw))


def synthetic_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, H, W, 3]: smooth gradients that move frame to frame, plus a little noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    frames = []
    for index in range(count):
        shift = index / max(count, 1)
        red = 255 * ((rows + shift) % 1.0) * np.ones_like(cols)
        green = 255 * ((cols + 2 * shift) % 1.0) * np.ones_like(rows)
        blue = 128 + 100 * np.sin(6 * (rows + cols) + index) + 0 * rows
        frame = np.stack([red, green, blue], axis=-1) + rng.normal(0, 8, (height, width, 3))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def encode_video(frames: np.ndarray, fps: int, *, container: str = "mp4", codec: str = "mpeg4") -> bytes:
    """Encode uint8 [T, H, W, 3] frames (even H and W) into a video file's bytes with PyAV."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()
