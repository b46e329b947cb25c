"""Fetch and decode the images and videos a chat request points at, within the operator's limits.

Sources: `data:` URLs (base64 or percent-encoded), http(s) URLs (http_fetch.py: public addresses
only unless the operator allows a network, byte cap, one deadline for the whole download), and
local files (`file://` or a bare path) only inside the directory the operator allowed, checked
after symlinks are resolved. Every failure is an InputError, so the server answers 4xx: it says
what was wrong with the media, except for http(s) fetches, which all fail with one text.
"""
from __future__ import annotations

import base64
import binascii
import io
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from qwen35.planner.errors import InputError
from qwen35.runtime.vision.http_fetch import Resolver, http_bytes, short_url, system_resolve
from qwen35.runtime.vision.video import DecodedVideo, VideoProcessorConfig, decode_video

MiB = 1 << 20
# Formats Pillow decodes in-process; EPS and friends would shell out to other programs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_ALLOW_LOCAL_HINT = "send a data: or http(s) URL, or have the operator allow a local media directory"


@dataclass(frozen=True)
class MediaPolicy:
    """What a request may fetch and how much: byte, pixel and frame caps, the timeout, local files."""

    local_media_dir: Path | None = None  # file:// and bare paths only inside this directory
    allow_http: bool = True
    allowed_domains: tuple[str, ...] | None = None  # http(s) hosts (and their subdomains); None: any host
    allowed_networks: tuple[str, ...] = ()  # CIDRs opened although not public, e.g. "10.0.0.0/8"; "0.0.0.0/0", "::/0": all
    timeout_s: float = 10.0  # whole download, not per read
    max_redirects: int = 3
    max_image_bytes: int = 20 * MiB
    max_video_bytes: int = 200 * MiB
    max_image_pixels: int = 8192 * 8192
    max_video_frame_pixels: int = 4096 * 4096
    max_video_frames: int = 18000  # frames in the file (10 minutes at 30 fps); all are decoded up to the last kept


@dataclass(frozen=True)
class MediaRef:
    """One image or video content part: its kind and the URL (data:, http(s):, file: or a path)."""

    kind: str  # "image" or "video"
    url: str


def _part_url(value: Any, key: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise InputError(f"content part {key} has no url", f'send {{"type": "{key}", "{key}": {{"url": "..."}}}}')
    return value


def media_ref(part: Mapping[str, Any]) -> MediaRef | None:
    """The media a chat content part points at (image_url/image/input_image, video_url/video), else None."""
    kind = part.get("type")
    for name, media_kind in (("image_url", "image"), ("image", "image"), ("video_url", "video"), ("video", "video")):
        if name in part or kind == name:
            return MediaRef(media_kind, _part_url(part.get(name), name))
    if kind == "input_image":
        return MediaRef("image", _part_url(part.get("image_url"), "image_url"))
    return None


def collect_media(messages: Iterable[Mapping[str, Any]]) -> list[MediaRef]:
    """Every image and video part of a conversation in prompt order (the order of their placeholders)."""
    refs = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            refs.extend(ref for part in content if isinstance(part, Mapping) and (ref := media_ref(part)))
    return refs


def _data_url_bytes(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url[len("data:"):].partition(",")
    if not comma:
        raise InputError("malformed data: URL (no comma)", "use data:<mime>;base64,<payload>")
    if header.endswith(";base64"):
        payload = "".join(payload.split())
        if len(payload) // 4 * 3 > max_bytes + 2:
            raise InputError(f"the data: URL holds over {max_bytes} bytes", "send a smaller file")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"the data: URL is not valid base64 ({exc})", "base64-encode the file bytes") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise InputError(f"the data: URL holds {len(data)} bytes, over the {max_bytes}-byte limit",
                         "send a smaller file")
    return data


def _local_path(url: str, policy: MediaPolicy) -> Path:
    if policy.local_media_dir is None:
        raise InputError("local file media is not allowed on this server", _ALLOW_LOCAL_HINT)
    if url.startswith("file:"):
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file URL {short_url(url)} names a remote host", "use file:///absolute/path")
        url = urllib.parse.unquote(parsed.path)
    base = Path(policy.local_media_dir).resolve()
    target = (base / url).resolve()  # an absolute url replaces base; symlinks are followed before the check
    if not target.is_relative_to(base):
        raise InputError(f"{short_url(url)} is outside the allowed media directory", f"put the file under {base}")
    if not target.is_file():
        raise InputError(f"{short_url(url)} is not a file in the allowed media directory", "check the path")
    return target


def _local_bytes(url: str, policy: MediaPolicy, max_bytes: int) -> bytes:
    path = _local_path(url, policy)
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{short_url(url)} is {size} bytes, over the {max_bytes}-byte limit", "send a smaller file")
    return path.read_bytes()


def fetch_bytes(url: str, policy: MediaPolicy, *, max_bytes: int, transport: httpx.BaseTransport | None = None,
                resolve: Resolver = system_resolve) -> bytes:
    """The raw bytes behind a media URL, refusing disallowed schemes, hosts, paths and sizes."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if ":" in url[:12] else ""
    if scheme == "data":
        return _data_url_bytes(url, max_bytes)
    if scheme in ("http", "https"):
        return http_bytes(url, policy, max_bytes, transport, resolve)
    if scheme == "file" or not scheme:
        return _local_bytes(url, policy, max_bytes)
    raise InputError(f"media URL scheme {scheme!r} is not supported", "use data:, http:// or https:// URLs")


def decode_image(data: bytes, policy: MediaPolicy) -> Image.Image:
    """Decode image bytes (PNG, JPEG, WebP, GIF first frame, BMP, TIFF, AVIF) within the pixel cap."""
    Image.init()
    formats = [name for name in IMAGE_FORMATS if name in Image.OPEN]  # AVIF only where Pillow was built with it
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InputError("the image could not be decoded", "send a PNG, JPEG, WebP, GIF, BMP or TIFF image") from exc
    width, height = image.size
    if width * height > policy.max_image_pixels:
        raise InputError(f"the image is {width}x{height}, over the {policy.max_image_pixels}-pixel limit",
                         "downscale the image before sending it")
    try:
        image.load()
        # Camera JPEGs store rotation in EXIF; transformers' load_image applies it too.
        return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"the image is truncated or corrupt ({exc})", "send the complete image file") from exc


def load_image(url: str, policy: MediaPolicy, *, transport: httpx.BaseTransport | None = None,
               resolve: Resolver = system_resolve) -> Image.Image:
    """Fetch and decode one image URL."""
    data = fetch_bytes(url, policy, max_bytes=policy.max_image_bytes, transport=transport, resolve=resolve)
    return decode_image(data, policy)


def load_video(url: str, policy: MediaPolicy, config: VideoProcessorConfig, *,
               transport: httpx.BaseTransport | None = None, resolve: Resolver = system_resolve) -> DecodedVideo:
    """Fetch one video URL and decode its sampled frames (resized to the processor's target size)."""
    data = fetch_bytes(url, policy, max_bytes=policy.max_video_bytes, transport=transport, resolve=resolve)
    return decode_video(data, config, max_frame_pixels=policy.max_video_frame_pixels,
                        max_total_frames=policy.max_video_frames)
