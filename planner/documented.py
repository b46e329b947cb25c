"""Deployments the Qwen3.5 guides document and validate (facts §5): they win over bare memory minima."""
from __future__ import annotations

# (gpu key, precision) -> tensor-parallel size for Qwen3.5-397B-A17B. The FP4 cells reuse the
# FP8 cells' sizes although the FP4 weights alone would fit on fewer GPUs.
QWEN35_397B_TP: dict[tuple[str, str], int] = {
    ("H100", "bf16"): 16, ("H100", "fp8"): 8,
    ("H200", "bf16"): 8, ("H200", "fp8"): 4,
    ("B200", "bf16"): 8, ("B200", "fp8"): 4, ("B200", "nvfp4"): 4,
    ("B300", "bf16"): 4, ("B300", "fp8"): 2, ("B300", "nvfp4"): 2,
    ("MI300X", "bf16"): 8, ("MI300X", "fp8"): 4,
    ("MI325X", "bf16"): 4, ("MI325X", "fp8"): 2,
    ("MI355X", "bf16"): 4, ("MI355X", "fp8"): 2,
}

DOCUMENTED_GPUS = ("H100", "H200", "B200", "B300", "MI300X", "MI325X", "MI355X")


def documented_tp(model_name: str, gpu_key: str, precision: str) -> int | None:
    """The guide's tensor-parallel size for this model, GPU and precision, if it documents one."""
    if model_name != "Qwen3.5-397B-A17B":
        return None
    return QWEN35_397B_TP.get((gpu_key, precision))
