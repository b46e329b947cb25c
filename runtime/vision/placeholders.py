"""Expand the chat template's one-per-item vision placeholders into one pad token per vision embedding.

An image's `<|image_pad|>` becomes grid_t*grid_h*grid_w / merge_size^2 copies of itself. A
video's `<|video_pad|>` becomes, for each temporal group, the text `<{t:.1f} seconds>` then
`<|vision_start|>`, grid_h*grid_w / merge_size^2 video pads and `<|vision_end|>`. Where the chat
template wraps the video pad as `<|vision_start|><|video_pad|><|vision_end|>`, the whole triple is
replaced (each group carries its own pair), as transformers' Qwen3VLProcessor does from 5.25 and
vLLM and SGLang do; a bare video pad is replaced alone.
Pure Python: no torch, so the server can count tokens before any pixels are touched.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwen35.planner.errors import InputError

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"


@dataclass(frozen=True)
class VisionTokens:
    """Ids of the vision special tokens (Qwen3.5's by default, facts §4)."""

    image_pad: int = 248056
    video_pad: int = 248057
    vision_start: int = 248053
    vision_end: int = 248054

    @classmethod
    def from_tokenizer(cls, tokenizer) -> VisionTokens:
        """Look the ids up by name in a tokenizer with `token_id(str) -> int`."""
        return cls(tokenizer.token_id(IMAGE_PAD), tokenizer.token_id(VIDEO_PAD), tokenizer.token_id(VISION_START),
                   tokenizer.token_id(VISION_END))


@dataclass(frozen=True)
class PlaceholderSpan:
    """Where one item's expansion sits in the expanded ids: [start, end), holding num_tokens pad ids."""

    kind: str  # "image" or "video"
    item: int  # index among the items of that kind, in prompt order
    start: int
    end: int
    num_tokens: int


@dataclass(frozen=True)
class ExpandedPrompt:
    """Prompt ids with every vision placeholder expanded, and one span per image or video in prompt order."""

    ids: list[int]
    spans: list[PlaceholderSpan]


def _grid(grid: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(value) for value in grid)
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"a grid is (grid_t, grid_h, grid_w) of positive ints, got {grid!r}")
    return values  # type: ignore[return-value]


def num_image_pad_tokens(grid_thw: Sequence[int], merge_size: int = 2) -> int:
    """Pad tokens for one image: grid_t*grid_h*grid_w / merge_size^2."""
    grid_t, grid_h, grid_w = _grid(grid_thw)
    return grid_t * grid_h * grid_w // merge_size ** 2


def num_video_pad_tokens(grid_thw: Sequence[int], merge_size: int = 2) -> int:
    """Pad tokens for one video (timestamps and per-group markers not counted)."""
    return num_image_pad_tokens(grid_thw, merge_size)


def timestamp_text(seconds: float) -> str:
    """The text before each temporal group, e.g. '<1.5 seconds>'."""
    return f"<{seconds:.1f} seconds>"


def _check_counts(kind: str, found: int, given: int) -> None:
    if found != given:
        pad = IMAGE_PAD if kind == "image" else VIDEO_PAD
        raise InputError(f"the prompt has {found} {kind} placeholder(s) but {given} {kind}(s) were given",
                         f"send one {kind} per {kind} part, and no literal {pad} in text")


def _check_videos(video_grids: Sequence[Sequence[int]], video_timestamps: Sequence[Sequence[float]]) -> None:
    if len(video_grids) != len(video_timestamps):
        raise ValueError(f"{len(video_grids)} video grids but {len(video_timestamps)} timestamp lists")
    for grid, stamps in zip(video_grids, video_timestamps, strict=True):
        if _grid(grid)[0] != len(stamps):
            raise ValueError(f"video grid_t {_grid(grid)[0]} but {len(stamps)} timestamps")


def expand_prompt_ids(ids: Sequence[int], *, image_grids: Sequence[Sequence[int]] = (),
                      video_grids: Sequence[Sequence[int]] = (), video_timestamps: Sequence[Sequence[float]] = (),
                      encode: Callable[[str], list[int]] | None = None, tokens: VisionTokens = VisionTokens(),
                      merge_size: int = 2) -> ExpandedPrompt:
    """Expand each image/video pad id in order; `encode` turns timestamp text into ids (needed for videos)."""
    found_images = sum(1 for token in ids if token == tokens.image_pad)
    found_videos = sum(1 for token in ids if token == tokens.video_pad)
    _check_counts("image", found_images, len(image_grids))
    _check_counts("video", found_videos, len(video_grids))
    _check_videos(video_grids, video_timestamps)
    if video_grids and encode is None:
        raise ValueError("expanding videos needs `encode` for the timestamp text")
    expanded: list[int] = []
    spans: list[PlaceholderSpan] = []
    image_index = video_index = 0
    skip = -1
    for index, token in enumerate(ids):
        if index == skip:
            continue
        if token == tokens.image_pad:
            count = num_image_pad_tokens(image_grids[image_index], merge_size)
            spans.append(PlaceholderSpan("image", image_index, len(expanded), len(expanded) + count, count))
            expanded.extend([tokens.image_pad] * count)
            image_index += 1
        elif token == tokens.video_pad:
            if expanded and expanded[-1] == tokens.vision_start and index + 1 < len(ids) \
                    and ids[index + 1] == tokens.vision_end:
                expanded.pop()  # the template's wrapper: replaced with the groups, which carry their own
                skip = index + 1
            grid_t, grid_h, grid_w = _grid(video_grids[video_index])
            per_group = grid_h * grid_w // merge_size ** 2
            start = len(expanded)
            for seconds in video_timestamps[video_index]:
                expanded.extend(encode(timestamp_text(seconds)))  # type: ignore[misc]
                expanded.append(tokens.vision_start)
                expanded.extend([tokens.video_pad] * per_group)
                expanded.append(tokens.vision_end)
            spans.append(PlaceholderSpan("video", video_index, start, len(expanded), per_group * grid_t))
            video_index += 1
        else:
            expanded.append(token)
    return ExpandedPrompt(expanded, spans)


def expand_prompt_text(text: str, *, image_grids: Sequence[Sequence[int]] = (),
                       video_grids: Sequence[Sequence[int]] = (), video_timestamps: Sequence[Sequence[float]] = (),
                       merge_size: int = 2) -> str:
    """The same expansion on prompt text (what transformers' processor tokenizes)."""
    _check_counts("image", text.count(IMAGE_PAD), len(image_grids))
    _check_counts("video", text.count(VIDEO_PAD), len(video_grids))
    _check_videos(video_grids, video_timestamps)
    pieces: list[str] = []
    image_index = video_index = position = 0
    while True:
        next_image, next_video = text.find(IMAGE_PAD, position), text.find(VIDEO_PAD, position)
        candidates = [index for index in (next_image, next_video) if index >= 0]
        if not candidates:
            break
        at = min(candidates)
        pieces.append(text[position:at])
        if at == next_image:
            pieces.append(IMAGE_PAD * num_image_pad_tokens(image_grids[image_index], merge_size))
            image_index, position = image_index + 1, at + len(IMAGE_PAD)
        else:
            end = at + len(VIDEO_PAD)
            if pieces[-1].endswith(VISION_START) and text.startswith(VISION_END, end):
                pieces[-1] = pieces[-1][:-len(VISION_START)]  # the template's wrapper, as in expand_prompt_ids
                end += len(VISION_END)
            _, grid_h, grid_w = _grid(video_grids[video_index])
            group = VISION_START + VIDEO_PAD * (grid_h * grid_w // merge_size ** 2) + VISION_END
            pieces.extend(timestamp_text(seconds) + group for seconds in video_timestamps[video_index])
            video_index, position = video_index + 1, end
    pieces.append(text[position:])
    return "".join(pieces)
