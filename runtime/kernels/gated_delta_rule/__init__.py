"""Gated delta rule (the Gated DeltaNet recurrence): chunked prefill and recurrent decode."""
from qwen35.runtime.kernels.gated_delta_rule.reference import (
    chunk_gated_delta_rule,
    recurrent_gated_delta_rule,
)

__all__ = ["chunk_gated_delta_rule", "recurrent_gated_delta_rule"]
