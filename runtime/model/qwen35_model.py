"""The whole Qwen3.5 checkpoint as one module: text model, lm_head, MTP head and vision tower."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import CheckpointConfig
from qwen35.runtime.kernels import KernelSet, select_kernels
from qwen35.runtime.model.batch import Mode, packed_batch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.decoder import TextModel
from qwen35.runtime.model.mrope import rope_index
from qwen35.runtime.model.mtp import MultiTokenPredictor
from qwen35.runtime.model.vision import VisionTower

GridLike = torch.Tensor | Sequence[Sequence[int]]  # [n, 3] (grid_t, grid_h, grid_w) per image or video
SCRATCH_PAGE_SIZE = 64  # pages of the throwaway cache a whole-prompt forward runs over


class Qwen35Model(nn.Module):
    """Dense or MoE Qwen3.5; `model(input_ids)` gives logits [B, T, vocab].

    Submodules map onto checkpoint prefixes: language_model <- model.language_model.,
    visual <- model.visual., mtp <- mtp., lm_head <- lm_head. (absent when tied: the
    embedding matrix doubles as the output projection).
    """

    def __init__(self, config: CheckpointConfig):
        super().__init__()
        self.config = config
        text = config.text
        self.tie_word_embeddings = config.tie_word_embeddings
        self.language_model = TextModel(text)
        self.lm_head = None if self.tie_word_embeddings else nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.mtp = MultiTokenPredictor(text) if text.mtp_num_hidden_layers > 0 else None
        self.visual = VisionTower(config.vision) if config.vision is not None else None

    @property
    def output_weight(self) -> torch.Tensor:
        """The [vocab, hidden] matrix that turns hidden states into logits."""
        return self.language_model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., vocab]."""
        return F.linear(hidden, self.output_weight)

    def forward(self, input_ids: torch.Tensor, *, pixel_values: torch.Tensor | None = None,
                image_grid_thw: GridLike | None = None, pixel_values_videos: torch.Tensor | None = None,
                video_grid_thw: GridLike | None = None, kernels: KernelSet | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] of whole prompts input_ids [B, T] from position 0; nothing is kept.

        One packed prefill over a scratch cache, through the same layers and ops the engine runs.
        Images and videos (flattened patches and their grids) replace the embeddings at their pad
        tokens, in order over the batch, and rotate by their M-RoPE positions.
        """
        return self.compute_logits(self.prompt_hidden(
            input_ids, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, kernels=kernels))

    def prompt_hidden(self, input_ids: torch.Tensor, *, pixel_values: torch.Tensor | None = None,
                      image_grid_thw: GridLike | None = None, pixel_values_videos: torch.Tensor | None = None,
                      video_grid_thw: GridLike | None = None, kernels: KernelSet | None = None) -> torch.Tensor:
        """Final-normed hidden states [B, T, H] of whole prompts (what forward turns into logits)."""
        rows, length = input_ids.shape
        device, dtype = self.output_weight.device, self.output_weight.dtype
        kernels = kernels or select_kernels(device)
        pages_per_row = -(-length // SCRATCH_PAGE_SIZE)
        cache = ModelCache(self.config.text, rows, rows * pages_per_row, SCRATCH_PAGE_SIZE, dtype, device)
        tables = torch.arange(rows * pages_per_row, dtype=torch.int32, device=device).view(rows, pages_per_row)
        flat = input_ids.to(device).reshape(-1)
        image_embeds = self._media_embeds(pixel_values, image_grid_thw)
        video_embeds = self._media_embeds(pixel_values_videos, video_grid_thw)
        embed_index, embeds = self.place_media(flat, image_embeds, video_embeds)
        positions = None
        if embeds is not None:
            positions = self.multimodal_positions(input_ids, image_grid_thw, video_grid_thw)[0].reshape(3, -1)
        batch = packed_batch(Mode.PREFILL, flat, [length] * rows, [0] * rows,
                             torch.arange(rows, dtype=torch.int32, device=device), tables, SCRATCH_PAGE_SIZE,
                             None if positions is None else positions.to(device))
        batch.embed_index, batch.embeds = embed_index, embeds
        return self.language_model(batch, cache, kernels).view(rows, length, -1)

    def place_media(self, token_ids: torch.Tensor, image_embeds: torch.Tensor | None,
                    video_embeds: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(pack offsets [M], embeddings [M, H]) of the image then video pads in packed token_ids [N].

        Each kind's embeddings are in pad order; their count must match the pads exactly.
        """
        offsets, embeds = [], []
        for kind, token_id, given in (("image", self.config.image_token_id, image_embeds),
                                      ("video", self.config.video_token_id, video_embeds)):
            pads = (token_ids == token_id).nonzero().flatten()
            count = 0 if given is None else given.shape[0]
            if pads.numel() != count:
                raise ValueError(f"the prompt has {pads.numel()} {kind} pad tokens (id {token_id}) but there are "
                                 f"{count} {kind} embeddings: expand each {kind} placeholder to one pad per "
                                 "embedding (qwen35.runtime.vision.expand_prompt_ids)")
            if count:
                offsets.append(pads)
                embeds.append(given)
        if not offsets:
            return None, None
        return torch.cat(offsets), torch.cat(embeds)

    def embed_vision(self, pixel_values: torch.Tensor, grid_thw: GridLike) -> torch.Tensor:
        """Vision-tower embeddings [tokens, hidden] of images or videos (flattened patches and their grids)."""
        if self.visual is None:
            raise ValueError("this checkpoint has no vision tower (no vision_config): send text only")
        weight = self.visual.patch_embed.proj.weight
        return self.visual(pixel_values.to(device=weight.device, dtype=weight.dtype), grid_thw)

    def multimodal_positions(self, input_ids: torch.Tensor, image_grid_thw: GridLike | None = None,
                             video_grid_thw: GridLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE positions [3, B, T] and rope deltas [B] for whole prompts input_ids [B, T]."""
        merge = self.config.vision.spatial_merge_size if self.config.vision is not None else 2
        return rope_index(input_ids, image_token_id=self.config.image_token_id,
                          video_token_id=self.config.video_token_id, spatial_merge_size=merge,
                          image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw)

    def _media_embeds(self, pixels: torch.Tensor | None, grid_thw: GridLike | None) -> torch.Tensor | None:
        """The vision tower's embeddings of one kind of media, or None without pixels."""
        if pixels is None:
            return None
        if grid_thw is None:
            raise ValueError("pixels need their grid_thw")
        return self.embed_vision(pixels, grid_thw)
