"""What to plan for: a named GPU target, the GPUs detected on this machine, or the bundled CPU target."""
from __future__ import annotations

from qwen35.planner.errors import InputError


def resolve_target(gpu: str, fallback: str | None):
    """The GPU model, per-node count and measured memory to plan for: named, or detected."""
    from qwen35.planner.hardware.catalog import parse_gpu_target

    if gpu != "auto":
        model, count = parse_gpu_target(gpu)
        return model, count, None, []
    from qwen35.planner.hardware.detect import detect_hardware

    report = detect_hardware()
    notes = list(report.warnings)
    if report.gpus:
        if report.model is None:
            names = sorted({g.name for g in report.gpus})
            raise InputError(f"detected GPUs {names} are not one known catalog part",
                             "name a target with --gpu, e.g. --gpu H100:8")
        smallest = min(g.memory_total_bytes for g in report.gpus)
        return report.model, len(report.gpus), smallest, notes
    if fallback:
        model, count = parse_gpu_target(fallback)
        return model, count, None, [f"no GPU detected; planning for the named target {model.key}:{count}"]
    raise InputError("no GPU detected on this machine", "name a target, e.g. --gpu H100:8")


def hardware_target(gpu: str, fallback: str | None):
    """Like resolve_target, as (catalog key, count, measured memory, notes); 'cpu' is the bundled CPU target."""
    from qwen35.planner.cpu_plan import CPU_TARGET

    if gpu.strip().lower() == CPU_TARGET:
        return CPU_TARGET, 1, None, []
    model, count, measured, notes = resolve_target(gpu, fallback)
    return model.key, count, measured, notes
