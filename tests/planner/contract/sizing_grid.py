"""The sizing harnesses' shared grid vocabulary: case names, planning one grid entry, device capabilities.

A grid entry is (model, "GPU:count", PlanRequest fields); both engines' sizing tests plan their
entries here, so a case is named and planned the same way in every recording.
"""
from __future__ import annotations

from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import resolve_model
from qwen35.planner.plan import Plan, PlanRequest
from qwen35.planner.solver import solve

# The device capability torch reports: CUDA's compute capability, on ROCm HIP's major/minor of the gfx target.
CAPABILITY = {"sm80": (8, 0), "sm89": (8, 9), "sm90": (9, 0), "sm100": (10, 0), "sm103": (10, 3), "sm120": (12, 0),
              "gfx942": (9, 4), "gfx950": (9, 5)}


def case_id(entry) -> str:
    """A grid entry's name in test ids and recordings: model@GPU:count[field=value,...]."""
    model, target, fields = entry
    extra = ",".join(f"{key}={value}" for key, value in sorted(fields.items()))
    return f"{model}@{target}" + (f"[{extra}]" if extra else "")


def plan_entry(entry, engine: str, version: str) -> Plan:
    """The plan of one grid entry for that engine release; every grid entry must fit."""
    model, target, fields = entry
    key, count = target.split(":")
    gpu = lookup_gpu(key)
    request = PlanRequest(model=model, gpu=gpu.key, gpus_per_node=int(count), engine=engine, engine_version=version,
                          **fields)
    plan = solve(request, gpu, resolve_model(model))
    assert plan.fits, (case_id(entry), plan.reasons)
    return plan
