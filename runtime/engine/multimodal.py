"""A request's images and videos on the engine side: pixels in, then per-chunk embeddings and positions.

The server hands the engine `MediaInputs` (preprocessed pixels and grids, prompt already
expanded to one pad per embedding). When the request's first prompt chunk runs, the runner
turns them into `PreparedMedia` once: the vision tower's embeddings and the prompt's M-RoPE
positions. Each prefill chunk [start, end) then takes its slice of the positions and the
embeddings of the pads inside it, so chunk edges may fall anywhere, inside an image too.
The last chunk leaves the row's rope delta in the cache, and decode continues from it.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from qwen35.runtime.engine.prefix_cache import media_seed

Grid = tuple[int, int, int]


@dataclass
class MediaInputs:
    """Preprocessed media of one prompt, in prompt order: pixels [patches, patch_dim] and (t, h, w) grids."""

    pixel_values: torch.Tensor | None = None
    image_grid_thw: list[Grid] = field(default_factory=list)
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: list[Grid] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        """Images plus videos."""
        return len(self.image_grid_thw) + len(self.video_grid_thw)


@dataclass
class PreparedMedia:
    """Embeddings and positions of one whole prompt, sliced per prefill chunk.

    image_before[i] (and video_before[i]) counts the image (video) pads among prompt tokens
    [0, i), so chunk [start, end) takes embeddings [image_before[start], image_before[end]).
    """

    positions: torch.Tensor  # [3, T] M-RoPE positions of the whole prompt
    image_embeds: torch.Tensor | None  # [image pads, hidden]
    video_embeds: torch.Tensor | None  # [video pads, hidden]
    image_before: list[int]
    video_before: list[int]
    rope_delta: int

    def chunk(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model forward of prompt tokens [start, end) of one row."""
        kwargs: dict[str, torch.Tensor] = {"positions": self.positions[:, None, start:end]}
        for name, embeds, before in (("image_embeds", self.image_embeds, self.image_before),
                                     ("video_embeds", self.video_embeds, self.video_before)):
            first, last = before[start], before[end]
            if last > first:
                kwargs[name] = embeds[first:last]
        return kwargs


def _counts_before(prompt_ids: Sequence[int], token_id: int) -> list[int]:
    counts, running = [0], 0
    for token in prompt_ids:
        running += token == token_id
        counts.append(running)
    return counts


def prepare_media(model: Any, prompt_ids: Sequence[int], media: MediaInputs) -> PreparedMedia:
    """Run the vision tower once per kind and place the whole prompt's M-RoPE positions (a Qwen35Model)."""
    device = model.output_weight.device
    image_embeds = video_embeds = None
    if media.image_grid_thw:
        image_embeds = model.embed_vision(media.pixel_values, media.image_grid_thw)
    if media.video_grid_thw:
        video_embeds = model.embed_vision(media.pixel_values_videos, media.video_grid_thw)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    positions, deltas = model.multimodal_positions(ids, media.image_grid_thw or None, media.video_grid_thw or None)
    config = model.config
    image_before = _counts_before(prompt_ids, config.image_token_id)
    video_before = _counts_before(prompt_ids, config.video_token_id)
    for kind, embeds, before in (("image", image_embeds, image_before), ("video", video_embeds, video_before)):
        found, given = before[-1], 0 if embeds is None else embeds.shape[0]
        if found != given:
            raise ValueError(f"the prompt has {found} {kind} pad tokens but its {kind}s give {given} embeddings")
    return PreparedMedia(positions[:, 0].to(device), image_embeds, video_embeds, image_before, video_before,
                         int(deltas[0]))


class RequestMedia:
    """One request's media, shared by its choices: embedded at the first prefill chunk, then pixels dropped."""

    def __init__(self, media: MediaInputs):
        self.media: MediaInputs | None = media
        self.prepared: PreparedMedia | None = None

    @functools.cached_property
    def digest(self) -> int:
        """The prefix cache's key seed: a digest of the pixels. Taken in the engine thread when the first
        choice is admitted (before its prefill drops the pixels), and only with prefix caching on."""
        media = self.media
        if media is None:
            raise RuntimeError("the media's digest is taken at admission, before its pixels are dropped")
        return media_seed([_tensor_bytes(t) for t in (media.pixel_values, media.pixel_values_videos)
                           if t is not None] + [repr((media.image_grid_thw, media.video_grid_thw)).encode()])

    def prepare(self, runner: Any, prompt_ids: Sequence[int]) -> PreparedMedia:
        """The prompt's PreparedMedia, computed by runner.prepare_media on first use."""
        if self.prepared is None:
            self.prepared = runner.prepare_media(list(prompt_ids), self.media)
            self.media = None
        return self.prepared


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a (host) tensor, whatever its dtype."""
    return tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
