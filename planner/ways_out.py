"""Ways out of a plan that does not fit: single changes to the request, each re-planned and kept only if it fits.

A way out is offered only after the changed request has been planned and fits, so applying any one
of them alone gives a working plan. Each kind of change offers its smallest step that fits (the
fewest GPUs or nodes, the longest context, the most requests, the largest smaller model); the list
is ranked by the GPUs the changed plan occupies, then by how much the change gives up.
"""
from __future__ import annotations

from dataclasses import replace

from qwen35.planner.engines import engine_module
from qwen35.planner.errors import InputError
from qwen35.planner.hardware.catalog import GpuModel
from qwen35.planner.models.registry import MODEL_NAMES, ResolvedModel, resolve_model
from qwen35.planner.plan import Plan, PlanRequest, WayOut

NODE_GPU_COUNTS = (2, 4, 8)  # GPUs per node a way out may ask for: the usual server sizes
SHORTER_CONTEXTS = (131072, 98304, 65536, 32768, 16384, 8192)
THINKING_MIN_CONTEXT = 131072
# Among changes that occupy the same GPUs, the ones that give up less come first.
GIVES_UP = ("precision", "running", "context", "engine", "model", "hardware")


def find_ways_out(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel, precision: str) -> list[WayOut]:
    """Every kind of single change whose re-plan fits, cheapest first."""
    found: list[tuple[int, int, WayOut]] = []
    for kind, attempts in _attempts(request, gpu, resolved, precision):
        for flags, why, changed, changed_gpu, changed_model in attempts:
            plan = _replan(changed, changed_gpu, changed_model)
            if plan is None:
                continue
            found.append((plan.parallel.gpus_per_node * plan.parallel.nodes, GIVES_UP.index(kind),
                          _way(flags, why, plan)))
            break  # the first attempt that fits is this kind's smallest step
    return [way for _, _, way in sorted(found, key=lambda item: (item[0], item[1]))]


def _replan(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel) -> Plan | None:
    from qwen35.planner.solver import plan_once

    try:
        plan = plan_once(request, gpu, resolved)
    except InputError:
        return None  # the change is not valid here (a precision the GPU lacks, ...)
    return plan if plan.fits else None


def _way(flags: str, why: str, plan: Plan) -> WayOut:
    parallel = plan.parallel
    if plan.context_length < THINKING_MIN_CONTEXT:
        why += f"; below {THINKING_MIN_CONTEXT}, thinking mode does not fit"
    return WayOut(flags=flags, why=why, gpus=parallel.gpus_per_node * parallel.nodes, tp=parallel.tp,
                  nodes=parallel.nodes, context_length=plan.context_length,
                  max_running_requests=plan.max_running_requests)


def _attempts(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel, precision: str):
    """(kind, [(flags, why, request, gpu, model), ...]) for each kind of change, smallest step first."""
    same = (gpu, resolved)
    count = request.gpus_per_node
    yield "hardware", [(f"--gpu {gpu.key}:{more}", f"{more} GPUs in the node",
                        replace(request, gpus_per_node=more), *same)
                       for more in NODE_GPU_COUNTS if more > count]
    nodes = request.nodes or 1
    most_nodes = engine_module(request.engine).MAX_OFFERED_NODES
    yield "hardware", [(f"--nodes {more}", f"{more} nodes of {count} x {gpu.key}", replace(request, nodes=more), *same)
                       for more in (2, 4, 8) if nodes < more <= most_nodes]
    cheaper = {"bf16": ("fp8", "nvfp4"), "fp8": ("nvfp4",)}.get(precision, ())
    yield "precision", [(f"--precision {other}", f"{other.upper()} weights", replace(request, precision=other), *same)
                        for other in cheaper if other in resolved.available_precisions]
    longest = request.context_length or THINKING_MIN_CONTEXT
    yield "context", [(f"--context-length {context}", "a shorter context", replace(request, context_length=context),
                       *same)
                      for context in SHORTER_CONTEXTS if context < longest]
    if request.max_running_requests:
        fewer = []
        running = request.max_running_requests // 2
        while running >= 1:
            fewer.append(running)
            running //= 2
        yield "running", [(f"--max-running-requests {value}", "fewer concurrent requests",
                           replace(request, max_running_requests=value), *same) for value in fewer]
    if request.engine != "sglang":
        yield "engine", [("--engine sglang", "SGLang plans multi-GPU and multi-node", replace(request, engine="sglang"),
                          *same)]
    if resolved.local_path is None and resolved.name in MODEL_NAMES:
        smaller = MODEL_NAMES[:MODEL_NAMES.index(resolved.name)]
        yield "model", [(f"--model {name}", "a smaller model", replace(request, model=name, precision=None),
                         gpu, resolve_model(name)) for name in reversed(smaller)]
