"""The planning entry point: a request in, a plan out (the GPU solver, or the bundled runtime's CPU plan)."""
from __future__ import annotations

from qwen35.planner.plan import Plan, PlanRequest


def plan_request(request: PlanRequest) -> Plan:
    """Plan a request: the GPU solver for a catalogue GPU, the CPU plan for the 'cpu' target."""
    from qwen35.planner.cpu_plan import CPU_TARGET, plan_cpu
    from qwen35.planner.hardware.catalog import gpu_for
    from qwen35.planner.models.registry import resolve_model
    from qwen35.planner.solver import solve

    resolved = resolve_model(request.model)
    if request.gpu == CPU_TARGET:
        return plan_cpu(request, resolved)
    return solve(request, gpu_for(request.gpu, request.gpu_memory_bytes), resolved)
