"""The vision tower (`model.visual.*`): patchify, learned position grid, 2D-rotary ViT blocks, 2x2 merge.

Input is what the processor emits (qwen35.runtime.vision): pixel_values [patches, C*Tp*P*P],
each row one patch flattened as (channel, frame in temporal patch, row, col). An item's
patches run frame group by frame group, and within a group over 2x2 merge windows in raster
order, the four patches of a window consecutive, so every 4 consecutive rows become one merged
token. grid_thw [n, 3] holds each item's (grid_t, grid_h, grid_w) in patches.

Attention is bidirectional within one frame group of one item and nowhere else: an image is
one segment, a video with grid_t = 4 is four (transformers' cu_seqlens split the same way).
Qwen3.5 has no deepstack taps (Qwen3-VL's intermediate mergers): only the final merger.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import VisionConfig
from qwen35.runtime.model.rotary import rotate_half

LAYER_NORM_EPS = 1e-6
# Not in the checkpoints' vision_config: transformers' Qwen3.5 vision default (axial rope).
VISION_ROPE_THETA = 10000.0

Grid = tuple[int, int, int]


def as_grids(grid_thw: torch.Tensor | Sequence[Sequence[int]]) -> list[Grid]:
    """(t, h, w) int triples from a [n, 3] tensor or a sequence of triples."""
    rows = grid_thw.tolist() if isinstance(grid_thw, torch.Tensor) else grid_thw
    grids = [tuple(int(v) for v in row) for row in rows]
    if any(len(g) != 3 or min(g) <= 0 for g in grids):
        raise ValueError(f"grid_thw rows are (grid_t, grid_h, grid_w) of positive ints, got {rows!r}")
    return grids  # type: ignore[return-value]


def merge_order(height: int, width: int, merge: int, device: torch.device) -> torch.Tensor:
    """Raster index (row * width + col) of each patch, listed in the processor's merge-window order."""
    raster = torch.arange(height * width, device=device).view(height // merge, merge, width // merge, merge)
    return raster.transpose(1, 2).flatten()


class PatchEmbed(nn.Module):
    """Conv3d over (temporal_patch, patch, patch) pixel cubes, with bias."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        kernel = (vision.temporal_patch_size, vision.patch_size, vision.patch_size)
        self.proj = nn.Conv3d(vision.in_channels, vision.hidden_size, kernel_size=kernel, stride=kernel, bias=True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[patches, C*Tp*P*P] -> [patches, hidden]."""
        # The kernel covers the whole cube with stride = kernel: the conv is one matmul per patch.
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(pixel_values.to(weight.dtype), weight, self.proj.bias)


class VisionAttention(nn.Module):
    """Fused qkv and output projection, both with bias; 2D rotary on q and k over the whole head."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.num_heads = vision.num_heads
        self.head_dim = vision.hidden_size // vision.num_heads
        self.qkv = nn.Linear(vision.hidden_size, 3 * vision.hidden_size, bias=True)
        self.proj = nn.Linear(vision.hidden_size, vision.hidden_size, bias=True)

    def forward(self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                segments: list[tuple[int, int, int]]) -> torch.Tensor:
        """hidden [N, D] -> [N, D]; segments are (start, count, length): `count` equal segments from `start`."""
        tokens = hidden.shape[0]
        query, key, value = self.qkv(hidden).view(tokens, 3, self.num_heads, self.head_dim).unbind(1)
        cos, sin = rope
        # Rotation in fp32 whatever the model dtype, as the reference does.
        query = (query.float() * cos + rotate_half(query.float()) * sin).to(value.dtype)
        key = (key.float() * cos + rotate_half(key.float()) * sin).to(value.dtype)
        out = torch.empty_like(query)
        for start, count, length in segments:
            # The frame groups of one item have equal length: one batched call per item.
            span = slice(start, start + count * length)
            q, k, v = (x[span].view(count, length, self.num_heads, self.head_dim).transpose(1, 2)
                       for x in (query, key, value))
            out[span] = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, self.num_heads,
                                                                                         self.head_dim)
        return self.proj(out.view(tokens, -1))


class VisionMLP(nn.Module):
    """linear_fc2(gelu_tanh(linear_fc1(x)))."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.linear_fc1 = nn.Linear(vision.hidden_size, vision.intermediate_size, bias=True)
        self.linear_fc2 = nn.Linear(vision.intermediate_size, vision.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's feed-forward."""
        return self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))


class VisionBlock(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(vision.hidden_size, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(vision.hidden_size, eps=LAYER_NORM_EPS)
        self.attn = VisionAttention(vision)
        self.mlp = VisionMLP(vision)

    def forward(self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                segments: list[tuple[int, int, int]]) -> torch.Tensor:
        """hidden [N, D] -> [N, D]."""
        hidden = hidden + self.attn(self.norm1(hidden), rope, segments)
        return hidden + self.mlp(self.norm2(hidden))


class PatchMerger(nn.Module):
    """LayerNorm per patch, then 2x2 neighbouring patches concatenated through an exact-GELU MLP."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        merged = vision.hidden_size * vision.spatial_merge_size**2
        self.norm = nn.LayerNorm(vision.hidden_size, eps=LAYER_NORM_EPS)
        self.linear_fc1 = nn.Linear(merged, merged, bias=True)
        self.linear_fc2 = nn.Linear(merged, vision.out_hidden_size, bias=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, D] patches in merge-window order -> [N / merge^2, out_hidden]."""
        merged = self.norm(hidden).view(-1, self.linear_fc1.in_features)
        return self.linear_fc2(F.gelu(self.linear_fc1(merged)))


class VisionTower(nn.Module):
    """patch_embed, pos_embed (a learned square grid), blocks, merger."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.config = vision
        self.patch_embed = PatchEmbed(vision)
        self.pos_embed = nn.Embedding(vision.num_position_embeddings, vision.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(vision) for _ in range(vision.depth))
        self.merger = PatchMerger(vision)
        self.grid_side = int(round(vision.num_position_embeddings**0.5))

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """The learned grid resampled bilinearly (corners aligned) to h x w patches: [h*w, D] in merge order."""
        weight = self.pos_embed.weight
        grid = weight.float().t().reshape(1, -1, self.grid_side, self.grid_side)
        resized = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=True)
        resized = resized.reshape(-1, height * width).t()
        return resized[merge_order(height, width, self.config.spatial_merge_size, weight.device)].to(weight.dtype)

    def rotary_angles(self, height: int, width: int) -> torch.Tensor:
        """Per-patch angles [h*w, head_dim/2] in merge order: row index on the first half, column on the second."""
        head_dim = self.config.hidden_size // self.config.num_heads
        device = self.pos_embed.weight.device
        # head_dim/4 frequencies, each used for the row and again for the column.
        quarter = torch.arange(0, head_dim // 2, 2, dtype=torch.float32, device=device) / (head_dim // 2)
        inv_freq = 1.0 / VISION_ROPE_THETA**quarter
        order = merge_order(height, width, self.config.spatial_merge_size, device)
        rows, cols = (order // width).float(), (order % width).float()
        return torch.cat((rows[:, None] * inv_freq, cols[:, None] * inv_freq), dim=-1)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
        """Flattened patches [N, C*Tp*P*P] of the items in grid_thw -> merged embeddings [N / merge^2, out_hidden]."""
        grids = as_grids(grid_thw)
        merge = self.config.spatial_merge_size
        total = sum(t * h * w for t, h, w in grids)
        if pixel_values.shape[0] != total:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} patches but grid_thw {grids} describes "
                             f"{total}: pass the processor's pixel values with their own grids")
        if any(h % merge or w % merge for _, h, w in grids):
            raise ValueError(f"grid heights and widths must be multiples of the merge size {merge}, got {grids}")
        hidden = self.patch_embed(pixel_values)

        positions, angles, segments, start, per_size = [], [], [], 0, {}
        for t, h, w in grids:
            if (h, w) not in per_size:  # a video's frame groups (and equal-sized images) share tables
                per_size[(h, w)] = (self.position_embeddings(h, w), self.rotary_angles(h, w))
            pos, angle = per_size[(h, w)]
            positions.append(pos.repeat(t, 1))
            angles.append(angle.repeat(t, 1))
            segments.append((start, t, h * w))
            start += t * h * w
        hidden = hidden + torch.cat(positions)
        angles = torch.cat(angles)
        angles = torch.cat((angles, angles), dim=-1)[:, None, :]  # [N, 1, head_dim], rotate-half layout
        rope = (angles.cos(), angles.sin())
        for block in self.blocks:
            hidden = block(hidden, rope, segments)
        return self.merger(hidden)
