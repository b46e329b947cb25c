"""Gated delta rule (the Gated DeltaNet recurrence): chunked prefill, recurrent decode, speculative verify/commit."""
from qwen35.runtime.kernels.gated_delta_rule.reference import gdn_gates

__all__ = ["gdn_gates"]
