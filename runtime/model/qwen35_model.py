"""The whole Qwen3.5 checkpoint as one module: text model, lm_head, MTP head and vision tower."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import CheckpointConfig
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.decoder import TextModel
from qwen35.runtime.model.mrope import rope_index
from qwen35.runtime.model.mtp import MultiTokenPredictor
from qwen35.runtime.model.vision import VisionTower

GridLike = torch.Tensor | Sequence[Sequence[int]]  # [n, 3] (grid_t, grid_h, grid_w) per image or video


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

    def forward(self, input_ids: torch.Tensor, cache: ModelCache | None = None,
                rows: list[int] | None = None, last_only: bool = False, *,
                pixel_values: torch.Tensor | None = None, image_grid_thw: GridLike | None = None,
                pixel_values_videos: torch.Tensor | None = None, video_grid_thw: GridLike | None = None,
                image_embeds: torch.Tensor | None = None, video_embeds: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for input_ids [B, T].

        Without a cache: a full causal forward from position 0. With one: the tokens extend
        cache rows `rows` (default: all rows, in order), each at its own position, and the
        rows' state is updated. last_only keeps just the last position's logits ([B, 1, V]).

        Images and videos: pixel_values (+ image_grid_thw) or precomputed image_embeds (from
        embed_vision), likewise for videos, replace the embeddings at the image/video pad
        tokens, in order over the batch (counts must match). Rotary positions then come from
        the grids over whole prompts (each row must start empty), and a cached row remembers
        its rope delta for the tokens that follow. To prefill such a prompt in chunks, pass
        each chunk's slice of multimodal_positions() as `positions` and the embeddings of the
        pads inside the chunk; the row's delta is then taken from the chunk's last position.
        `positions` ([B, T] or [3, B, T]) overrides the rotary positions of any call.
        """
        image_embeds = self._media_embeds(pixel_values, image_grid_thw, image_embeds, "image")
        video_embeds = self._media_embeds(pixel_values_videos, video_grid_thw, video_embeds, "video")
        multimodal = image_embeds is not None or video_embeds is not None
        record_deltas = multimodal or positions is not None
        hidden = None
        if multimodal:
            hidden = self.language_model.embed_tokens(input_ids)
            self._fuse(hidden, input_ids, image_embeds, self.config.image_token_id, "image")
            self._fuse(hidden, input_ids, video_embeds, self.config.video_token_id, "video")
            if positions is None:
                started = cache is not None and any(cache.lengths[r] for r in (rows or range(cache.num_rows)))
                if started:
                    raise ValueError("images or videos without `positions` need whole prompts from position 0; to "
                                     "prefill in chunks, pass each chunk's slice of multimodal_positions()")
                positions, _ = self.multimodal_positions(input_ids, image_grid_thw, video_grid_thw)

        step = None
        if cache is not None:
            expected = cache.num_rows if rows is None else len(rows)
            if input_ids.shape[0] != expected:
                raise ValueError(f"input_ids has {input_ids.shape[0]} rows but the call names {expected} cache rows")
            step = cache.begin(rows, input_ids.shape[1])
            if positions is None:
                positions = step.rope_positions  # None unless a row continues after vision tokens
        if multimodal:
            hidden = self.language_model(input_ids, cache, step, positions, inputs_embeds=hidden)
        else:
            hidden = self.language_model(input_ids, cache, step, positions)
        if cache is not None:
            cache.commit(step)
            if record_deltas:
                self._record_rope_deltas(cache, step, positions)
        if last_only:
            hidden = hidden[:, -1:]
        return self.compute_logits(hidden)

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

    def _media_embeds(self, pixels: torch.Tensor | None, grid_thw: GridLike | None, embeds: torch.Tensor | None,
                      kind: str) -> torch.Tensor | None:
        """The embeddings of one kind of media: given, or computed from pixels and grids."""
        if pixels is None:
            return embeds
        if embeds is not None:
            raise ValueError(f"pass {kind} pixels or {kind}_embeds, not both")
        if grid_thw is None:
            raise ValueError(f"{kind} pixels need their {kind}_grid_thw")
        return self.embed_vision(pixels, grid_thw)

    @staticmethod
    def _fuse(hidden: torch.Tensor, input_ids: torch.Tensor, embeds: torch.Tensor | None,
              token_id: int, kind: str) -> None:
        """Write embeds over hidden at the pad tokens of one kind, in place."""
        if embeds is None:
            return
        mask = input_ids == token_id
        count = int(mask.sum())
        if count != embeds.shape[0] or embeds.shape[-1] != hidden.shape[-1]:
            raise ValueError(f"the prompt has {count} {kind} pad tokens (id {token_id}) but the {kind} embeddings "
                             f"are {tuple(embeds.shape)}: expand each {kind} placeholder to one pad per embedding "
                             "(qwen35.runtime.vision.expand_prompt_ids)")
        hidden[mask] = embeds.to(hidden.dtype)

    @staticmethod
    def _record_rope_deltas(cache: ModelCache, step: StepInfo, positions: torch.Tensor) -> None:
        """A row's delta after a positioned call: its last token's largest position + 1 - its length.

        For a whole prompt this is transformers' rope delta: the last token, text or the end
        of a vision item, always holds the prompt's largest position.
        """
        last = positions[..., -1]
        last = last.amax(dim=0) if last.dim() == 2 else last  # [3, B] -> [B]
        for r, final, length in zip(step.rows.tolist(), last.tolist(), step.seq_lens.tolist()):
            cache.rope_deltas[r] = int(final) + 1 - int(length)

    def new_cache(self, num_rows: int, max_len: int) -> ModelCache:
        """Empty per-row generation state on the model's device and dtype."""
        weight = self.language_model.embed_tokens.weight
        return ModelCache(self.config.text, num_rows, max_len, device=weight.device, dtype=weight.dtype)
