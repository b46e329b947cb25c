"""Decode attention over a paged KV cache: one query token per sequence, grouped-query heads."""
from qwen35.runtime.kernels.paged_attention.reference import gather_pages, paged_decode_attention

__all__ = ["gather_pages", "paged_decode_attention"]
