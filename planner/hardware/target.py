"""What to plan for: a named GPU target, the GPUs detected on this machine, or the bundled CPU target."""
from __future__ import annotations

from qwen35.planner.errors import InputError


def resolve_target(gpu: str, fallback: str | None, memory_bytes: int | None = None):
    """The GPU model, per-node count and memory to plan for: named (memory as given), or detected (as measured)."""
    from qwen35.planner.hardware.catalog import custom_gpu, parse_gpu_target

    if gpu != "auto":
        model, count = parse_gpu_target(gpu, memory_bytes)
        return model, count, memory_bytes, []
    from qwen35.planner.hardware.detect import detect_hardware

    report = detect_hardware()
    notes = list(report.warnings)
    if report.gpus:
        names = sorted({g.name for g in report.gpus})
        smallest = memory_bytes or min(g.memory_total_bytes for g in report.gpus)
        if report.model is None:
            if len(names) > 1:
                raise InputError(f"detected GPUs {names} are not one known catalog part",
                                 "name a target with --gpu, e.g. --gpu H100:8")
            notes.append(f"{names[0]} is not in the catalogue: planning with its measured memory, "
                         "no FP8/FP4 and PCIe links assumed")
            return custom_gpu(names[0], smallest), len(report.gpus), smallest, notes
        return report.model, len(report.gpus), smallest, notes
    if fallback:
        model, count = parse_gpu_target(fallback, memory_bytes)
        return model, count, memory_bytes, [f"no GPU detected; planning for the named target {model.key}:{count}"]
    raise InputError("no GPU detected on this machine", "name a target, e.g. --gpu H100:8")


def hardware_target(gpu: str, fallback: str | None, memory_bytes: int | None = None):
    """Like resolve_target, as (catalog key, count, measured memory, notes); 'cpu' is the bundled CPU target."""
    from qwen35.planner.cpu_plan import CPU_TARGET

    if gpu.strip().lower() == CPU_TARGET:
        return CPU_TARGET, 1, None, []
    model, count, measured, notes = resolve_target(gpu, fallback, memory_bytes)
    return model.key, count, measured, notes
