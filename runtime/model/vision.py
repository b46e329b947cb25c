"""The vision tower's modules (`model.visual.*`), named as in the checkpoint so its weights load.

The forward pass (patchify, interpolated position grid, 2D rotary attention, 2x2 merge)
comes with image input support; for now the tower holds its weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import VisionConfig

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Conv3d over (temporal_patch, patch, patch) pixel cubes, with bias."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        kernel = (vision.temporal_patch_size, vision.patch_size, vision.patch_size)
        self.proj = nn.Conv3d(vision.in_channels, vision.hidden_size, kernel_size=kernel, stride=kernel, bias=True)


class VisionAttention(nn.Module):
    """Fused qkv and output projection, both with bias."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.num_heads = vision.num_heads
        self.qkv = nn.Linear(vision.hidden_size, 3 * vision.hidden_size, bias=True)
        self.proj = nn.Linear(vision.hidden_size, vision.hidden_size, bias=True)


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


class PatchMerger(nn.Module):
    """LayerNorm per patch, then 2x2 neighbouring patches concatenated through an exact-GELU MLP."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        merged = vision.hidden_size * vision.spatial_merge_size**2
        self.norm = nn.LayerNorm(vision.hidden_size, eps=LAYER_NORM_EPS)
        self.linear_fc1 = nn.Linear(merged, merged, bias=True)
        self.linear_fc2 = nn.Linear(merged, vision.out_hidden_size, bias=True)


class VisionTower(nn.Module):
    """patch_embed, pos_embed (a learned square grid), blocks, merger."""

    def __init__(self, vision: VisionConfig):
        super().__init__()
        self.config = vision
        self.patch_embed = PatchEmbed(vision)
        self.pos_embed = nn.Embedding(vision.num_position_embeddings, vision.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(vision) for _ in range(vision.depth))
        self.merger = PatchMerger(vision)
