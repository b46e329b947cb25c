"""Qwen3.5's added tokens: names, ids and the `special` flag its tokenizer_config.json carries."""
from __future__ import annotations

from dataclasses import dataclass

# The byte-level BPE part of the real vocabulary holds ids 0..248043; the 33 added tokens
# follow contiguously, so the tokenizer knows 248077 ids while the embedding has 248320 rows.
BPE_VOCAB_SIZE = 248044
TOKENIZER_ID_COUNT = 248077


@dataclass(frozen=True)
class AddedTokenSpec:
    """One added token as Qwen3.5 declares it (`special=False` tokens survive skip_special_tokens)."""

    content: str
    id: int
    special: bool


def _build() -> tuple[AddedTokenSpec, ...]:
    # Order is the id order; ids are asserted below so a reordering cannot slip through.
    names = [
        ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
        ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
        ("<|box_start|>", True), ("<|box_end|>", True),
        ("<|quad_start|>", True), ("<|quad_end|>", True),
        ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
        ("<|image_pad|>", True), ("<|video_pad|>", True),
        ("<tool_call>", False), ("</tool_call>", False),
        ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
        ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
        ("<tool_response>", False), ("</tool_response>", False),
        ("<think>", False), ("</think>", False),
        ("<|audio_start|>", True), ("<|audio_end|>", True),
        ("<tts_pad>", True), ("<tts_text_bos>", True), ("<tts_text_eod>", True),
        ("<tts_text_bos_single>", True), ("<|audio_pad|>", True),
    ]
    return tuple(
        AddedTokenSpec(content, BPE_VOCAB_SIZE + index, special)
        for index, (content, special) in enumerate(names)
    )


ADDED_TOKENS: tuple[AddedTokenSpec, ...] = _build()
ADDED_TOKEN_IDS: dict[str, int] = {token.content: token.id for token in ADDED_TOKENS}

