"""Prefill attention over a paged KV cache: packed varlen chunks, causal after their cached tokens, GQA."""
from qwen35.runtime.kernels.paged_prefill_attention.reference import paged_prefill_attention

__all__ = ["paged_prefill_attention"]
