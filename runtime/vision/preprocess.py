"""Image preprocessing for Qwen3.5's vision tower: smart resize, normalise, flatten into patches.

Follows the Qwen2-VL image processor that Qwen3.5 checkpoints name in preprocessor_config.json,
in its PIL form (transformers' Qwen2VLImageProcessorPil): Pillow bicubic resize of the uint8 RGB
image, rescale by 1/255 in float64, normalise in float32, then cut into 16x16 patches grouped
2x2 for the merger. One image fills a temporal patch by repetition, so its grid_t is 1.
(The torchvision form of the same processor resizes with torch's uint8 kernel, which differs
from Pillow by at most one grey level on under 1% of pixels.)
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from qwen35.planner.errors import InputError

IMAGE_CONFIG_FILE = "preprocessor_config.json"
MAX_ASPECT_RATIO = 200
_PIL_RESAMPLE = {0: Image.Resampling.NEAREST, 1: Image.Resampling.LANCZOS, 2: Image.Resampling.BILINEAR,
                 3: Image.Resampling.BICUBIC, 4: Image.Resampling.BOX, 5: Image.Resampling.HAMMING}

ImageInput = Image.Image | np.ndarray


@dataclass(frozen=True)
class ImageProcessorConfig:
    """The fields of preprocessor_config.json that shape pixel_values (defaults are Qwen3.5's)."""

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 65536
    max_pixels: int = 16777216
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    resample: int = 3
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def factor(self) -> int:
        """Side lengths are multiples of this: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: 3 channels x temporal patch x patch x patch (1536 for Qwen3.5)."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size


def _number(raw: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise InputError(f"processor config field {key} must be a positive integer, got {value!r}",
                         "fix the checkpoint's preprocessor config")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise InputError(f"processor config field {key} must be a positive number, got {value!r}",
                         "fix the checkpoint's preprocessor config")
    return kind(value)


def _triple(raw: Mapping[str, Any], key: str, default: tuple[float, ...]) -> tuple[float, float, float]:
    value = raw.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise InputError(f"processor config field {key} must be 3 numbers, got {value!r}",
                         "fix the checkpoint's preprocessor config")
    return tuple(float(item) for item in value)  # type: ignore[return-value]


def pixel_bounds(raw: Mapping[str, Any], default: tuple[int, int], *, pixels_override_size: bool) -> tuple[int, int]:
    """(min_pixels, max_pixels) from `size: {shortest_edge, longest_edge}`, then min_pixels/max_pixels if honoured."""
    low, high = default
    size = raw.get("size")
    if isinstance(size, Mapping):
        low = size.get("shortest_edge", low)
        high = size.get("longest_edge", high)
    elif size is not None:
        raise InputError(f"processor config size must be an object, got {size!r}",
                         'use {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}')
    if pixels_override_size:
        # The image processor lets top-level min_pixels/max_pixels override `size` (its backward-compatible
        # path); the Qwen3-VL video processor reads `size` only.
        low = raw["min_pixels"] if raw.get("min_pixels") is not None else low
        high = raw["max_pixels"] if raw.get("max_pixels") is not None else high
    low = _number({"min_pixels": low}, "min_pixels", default[0], int)
    high = _number({"max_pixels": high}, "max_pixels", default[1], int)
    if low > high:
        raise InputError(f"min_pixels {low} exceeds max_pixels {high}", "fix the processor config or request kwargs")
    return low, high


def shared_fields(raw: Mapping[str, Any], defaults: ImageProcessorConfig) -> dict[str, Any]:
    """The patching and normalisation fields common to the image and video configs."""
    return {
        "patch_size": _number(raw, "patch_size", defaults.patch_size, int),
        "temporal_patch_size": _number(raw, "temporal_patch_size", defaults.temporal_patch_size, int),
        "merge_size": _number(raw, "merge_size", defaults.merge_size, int),
        "image_mean": _triple(raw, "image_mean", defaults.image_mean),
        "image_std": _triple(raw, "image_std", defaults.image_std),
        "rescale_factor": _number(raw, "rescale_factor", defaults.rescale_factor, float),
        "resample": int(raw.get("resample", defaults.resample)),
        "do_resize": bool(raw.get("do_resize", True)),
        "do_rescale": bool(raw.get("do_rescale", True)),
        "do_normalize": bool(raw.get("do_normalize", True)),
        "do_convert_rgb": bool(raw.get("do_convert_rgb", True)),
        "extra": dict(raw),
    }


def image_config_from_dict(raw: Mapping[str, Any]) -> ImageProcessorConfig:
    """Build the image config from preprocessor_config.json's dict (min/max_pixels override size)."""
    defaults = ImageProcessorConfig()
    low, high = pixel_bounds(raw, (defaults.min_pixels, defaults.max_pixels), pixels_override_size=True)
    return ImageProcessorConfig(min_pixels=low, max_pixels=high, **shared_fields(raw, defaults))


def read_json_config(path: Path) -> dict[str, Any]:
    """A processor config file's JSON object; InputError when it is unreadable."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}", "check the checkpoint's processor config files") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold a JSON object", "check the checkpoint's processor config files")
    return data


def load_image_config(checkpoint_dir: str | Path) -> ImageProcessorConfig:
    """The checkpoint's image config from preprocessor_config.json (Qwen3.5 defaults when absent)."""
    path = Path(checkpoint_dir) / IMAGE_CONFIG_FILE
    return image_config_from_dict(read_json_config(path)) if path.is_file() else ImageProcessorConfig()


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Nearest (height, width) in multiples of factor with pixels in [min_pixels, max_pixels], aspect kept."""
    if min(height, width) <= 0:
        raise InputError(f"image has no pixels ({width}x{height})", "send a non-empty image")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InputError(f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is over "
                         f"{MAX_ASPECT_RATIO}:1 ({width}x{height})", "crop or pad the image to a squarer shape")
    resized_height = round(height / factor) * factor
    resized_width = round(width / factor) * factor
    if resized_height * resized_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        resized_height = max(factor, math.floor(height / beta / factor) * factor)
        resized_width = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_height * resized_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_height = math.ceil(height * beta / factor) * factor
        resized_width = math.ceil(width * beta / factor) * factor
    return resized_height, resized_width


def rgb_array(image: ImageInput, *, convert: bool = True) -> np.ndarray:
    """A uint8 [H, W, 3] array; transparency is composited onto white, grey is repeated to 3 channels."""
    if isinstance(image, Image.Image):
        if not convert:
            return np.asarray(image)
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8, got {array.dtype}", "pass 0-255 pixel values as uint8")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"image arrays must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {array.shape}",
                         "pass channels-last pixel arrays")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        alpha = array[..., 3:4] / 255
        return np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return array


def patchify(pixels: torch.Tensor, *, patch_size: int, merge_size: int, temporal_patch_size: int) -> torch.Tensor:
    """[T, C, H, W] float frames (T a multiple of temporal_patch_size) -> [grid_t*grid_h*grid_w, C*T'*p*p].

    Rows run frame group by frame group, then over 2x2 merge windows in raster order, then the
    four patches inside a window; each row is (channel, frame in group, patch row, patch col).
    """
    frames, channels, height, width = pixels.shape
    grid_t, grid_h, grid_w = frames // temporal_patch_size, height // patch_size, width // patch_size
    patches = pixels.reshape(grid_t, temporal_patch_size, channels, grid_h // merge_size, merge_size, patch_size,
                             grid_w // merge_size, merge_size, patch_size)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)


@dataclass(frozen=True)
class ProcessedImages:
    """pixel_values [sum of patches, patch_dim] float32 and image_grid_thw [n, 3] int64, in input order."""

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    def grids(self) -> list[tuple[int, int, int]]:
        """Each image's (grid_t, grid_h, grid_w) as plain ints."""
        return [tuple(int(value) for value in row) for row in self.image_grid_thw.tolist()]  # type: ignore[misc]


def image_pixels(image: ImageInput, config: ImageProcessorConfig) -> tuple[np.ndarray, int, int]:
    """One image resized and normalised: float32 [3, H, W] plus its grid_h and grid_w."""
    rgb = rgb_array(image, convert=config.do_convert_rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise InputError(f"image must have 3 colour channels, got shape {rgb.shape}", "send an RGB image")
    height, width = rgb.shape[:2]
    if config.do_resize:
        height, width = smart_resize(height, width, factor=config.factor, min_pixels=config.min_pixels,
                                     max_pixels=config.max_pixels)
        resample = _PIL_RESAMPLE.get(config.resample, Image.Resampling.BICUBIC)
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), resample=resample))
    elif height % config.factor or width % config.factor:
        raise InputError(f"image is {width}x{height}, not a multiple of {config.factor}, and resizing is off",
                         "enable do_resize in the processor config or send matching sizes")
    values = np.moveaxis(rgb, -1, 0)
    if config.do_rescale:
        values = (values.astype(np.float64) * config.rescale_factor).astype(np.float32)
    else:
        values = values.astype(np.float32)
    if config.do_normalize:
        mean = np.array(config.image_mean, dtype=np.float32)[:, None, None]
        std = np.array(config.image_std, dtype=np.float32)[:, None, None]
        values = (values - mean) / std
    return values, height // config.patch_size, width // config.patch_size


def preprocess_image(image: ImageInput, config: ImageProcessorConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """One image -> (patches [grid_h*grid_w, patch_dim] float32, (1, grid_h, grid_w))."""
    values, grid_h, grid_w = image_pixels(image, config)
    # The still image stands in for every frame of its temporal patch.
    frames = torch.from_numpy(values).unsqueeze(0).expand(config.temporal_patch_size, -1, -1, -1)
    patches = patchify(frames, patch_size=config.patch_size, merge_size=config.merge_size,
                       temporal_patch_size=config.temporal_patch_size)
    return patches.contiguous(), (1, grid_h, grid_w)


def preprocess_images(images: Sequence[ImageInput], config: ImageProcessorConfig) -> ProcessedImages:
    """Several images -> concatenated pixel_values and image_grid_thw, as transformers' processor returns."""
    if not images:
        return ProcessedImages(torch.empty(0, config.patch_dim), torch.empty(0, 3, dtype=torch.int64))
    results = [preprocess_image(image, config) for image in images]
    pixel_values = torch.cat([patches for patches, _ in results])
    grid_thw = torch.tensor([grid for _, grid in results], dtype=torch.int64)
    return ProcessedImages(pixel_values, grid_thw)


def num_image_tokens(height: int, width: int, config: ImageProcessorConfig) -> int:
    """Placeholder tokens an image of this size expands to, without decoding it."""
    resized_height, resized_width = smart_resize(height, width, factor=config.factor, min_pixels=config.min_pixels,
                                                 max_pixels=config.max_pixels)
    return (resized_height // config.patch_size) * (resized_width // config.patch_size) // config.merge_size ** 2
