"""Multimodal rotary positions (M-RoPE) for prompts that hold image and video pad tokens.

Every token gets a (temporal, height, width) position triple; rotary.py deals the three rows
out to the frequency slots. The rules, as transformers' Qwen3.5 get_rope_index applies them:

- Text tokens carry one running counter in all three rows.
- A vision item of merged grid (t, h, w) (patch grid / merge size in h and w) that starts at
  counter p takes positions (p + i, p + j, p + k) for its tokens in (t, h, w) raster order,
  then the counter advances by max(h, w): not by its token count, and whatever t is.
- Each of a video's frame groups is its own item with t = 1: Qwen3.5 prompts put a timestamp
  text (`<1.5 seconds>`) and vision start/end between frame groups, so time is carried by
  text, not by the temporal row (no second_per_grid scaling as in Qwen2.5-VL).
- A row's rope delta is (largest position + 1) - length. A token at slot s after the prompt
  (decode) sits at position s + delta in all three rows; text-only prompts have delta 0.

A run of consecutive pad tokens of one kind takes as many grids, in order, as its length
covers (transformers takes exactly one grid per run; the two agree whenever each run is one
item, which is what the chat template and processor produce).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from qwen35.runtime.model.vision import Grid, as_grids

TEXT, IMAGE, VIDEO = 0, 1, 2
_NAMES = {IMAGE: "image", VIDEO: "video"}


def split_video_grids(video_grid_thw: torch.Tensor | Sequence[Sequence[int]] | None) -> list[Grid]:
    """Each video's (t, h, w) as t frame-group grids (1, h, w): the items the prompt places one by one."""
    if video_grid_thw is None:
        return []
    return [(1, h, w) for t, h, w in as_grids(video_grid_thw) for _ in range(t)]


def vision_positions(start: int, grid: Grid, merge: int) -> torch.Tensor:
    """[3, t*h'*w'] positions of one item's tokens (h', w' after the merge) placed at counter `start`."""
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    temporal, height, width = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack((temporal, height, width)).reshape(3, -1) + start


def row_positions(kinds: torch.Tensor, grids: dict[int, deque], merge: int) -> torch.Tensor:
    """[3, T] positions for one row whose token kinds (TEXT/IMAGE/VIDEO, on the CPU) are `kinds`; consumes grids."""
    length = kinds.shape[0]
    if length == 0:
        return torch.zeros(3, 0, dtype=torch.long)
    changes = (kinds[1:] != kinds[:-1]).nonzero().flatten() + 1
    bounds = [0, *changes.tolist(), length]
    pieces, counter = [], 0
    for start, end in zip(bounds[:-1], bounds[1:]):
        kind = int(kinds[start])
        if kind == TEXT:
            pieces.append(torch.arange(counter, counter + end - start).expand(3, -1))
            counter += end - start
            continue
        remaining = end - start
        while remaining > 0:
            if not grids[kind]:
                raise ValueError(f"the prompt has more {_NAMES[kind]} pad tokens than the {_NAMES[kind]} grids "
                                 f"cover: pass one grid_thw row per {_NAMES[kind]}, in prompt order")
            grid = grids[kind].popleft()
            count = grid[0] * (grid[1] // merge) * (grid[2] // merge)
            if count > remaining:
                raise ValueError(f"a run of {end - start} {_NAMES[kind]} pad tokens ends inside a {_NAMES[kind]} of "
                                 f"{count} tokens (grid {grid}): expand each placeholder to its full token count")
            pieces.append(vision_positions(counter, grid, merge))
            counter += max(grid[1], grid[2]) // merge
            remaining -= count
    return torch.cat(pieces, dim=1)


def rope_index(input_ids: torch.Tensor, *, image_token_id: int, video_token_id: int, spatial_merge_size: int,
               image_grid_thw: torch.Tensor | Sequence[Sequence[int]] | None = None,
               video_grid_thw: torch.Tensor | Sequence[Sequence[int]] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions [3, B, T] and rope deltas [B] for whole prompts input_ids [B, T].

    Grids are consumed in prompt order across the batch (row 0's items first), as the
    processor lists them; every grid must be used.
    """
    grids = {IMAGE: deque(as_grids(image_grid_thw) if image_grid_thw is not None else []),
             VIDEO: deque(split_video_grids(video_grid_thw))}
    ids = input_ids.cpu()
    kinds = (ids == image_token_id).long() * IMAGE + (ids == video_token_id).long() * VIDEO
    rows = [row_positions(kinds[b], grids, spatial_merge_size) for b in range(ids.shape[0])]
    for kind, left in grids.items():
        if left:
            raise ValueError(f"{len(left)} {_NAMES[kind]} grid(s) left over: the prompt has fewer "
                             f"{_NAMES[kind]} pad tokens than the grids describe")
    positions = torch.stack(rows, dim=1) if rows else torch.zeros(3, 0, ids.shape[1], dtype=torch.long)
    length = ids.shape[1]
    deltas = torch.tensor([int(row.max()) + 1 - length if length else 0 for row in rows], dtype=torch.long)
    return positions.to(input_ids.device), deltas.to(input_ids.device)
