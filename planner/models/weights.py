"""Bytes and parameters of a checkpoint, summed from its tensor list."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qwen35.planner.models.config import CheckpointConfig
from qwen35.planner.models.tensors import COMPONENTS, SHARDINGS, tensor_groups


@dataclass(frozen=True)
class WeightBreakdown:
    """Checkpoint bytes by component and by tensor-parallel sharding class, and parameter counts."""

    precision: str
    total_bytes: int
    bytes_by_component: dict[str, int]  # "language" | "mtp" | "vision"
    bytes_by_sharding: dict[str, int]  # "column" | "row" | "replicated" | "expert" | "vocab"
    scale_bytes: int  # of total_bytes, the quantization scales
    params: int  # FP4 bytes count as two parameters, scales as none
    params_by_component: dict[str, int]


def weight_bytes(cfg: CheckpointConfig, precision: str) -> WeightBreakdown:
    """Sum the bytes and parameters of a `precision` checkpoint of `cfg`."""
    by_component: Counter[str] = Counter({c: 0 for c in COMPONENTS})
    by_sharding: Counter[str] = Counter({s: 0 for s in SHARDINGS})
    params: Counter[str] = Counter({c: 0 for c in COMPONENTS})
    scales = 0
    for count, specs in tensor_groups(cfg, precision=precision):
        for spec in specs:
            nbytes = spec.nbytes * count
            by_component[spec.component] += nbytes
            by_sharding[spec.sharding] += nbytes
            params[spec.component] += spec.params * count
            if spec.is_scale:
                scales += nbytes
    return WeightBreakdown(
        precision=precision,
        total_bytes=sum(by_component.values()),
        bytes_by_component=dict(by_component),
        bytes_by_sharding=dict(by_sharding),
        scale_bytes=scales,
        params=sum(params.values()),
        params_by_component=dict(params),
    )
