"""Ways out of a no-fit plan: each one, applied alone, re-plans to a plan that fits; cheapest first."""
import re
from dataclasses import replace

import pytest

from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import resolve_model
from qwen35.planner.plan import PlanRequest
from qwen35.planner.solver import solve

NO_FIT = [
    dict(model="Qwen3.5-122B-A10B", gpu="H100", gpus_per_node=3),
    dict(model="Qwen3.5-27B", gpu="RTX4090", gpus_per_node=1),
    dict(model="Qwen3.5-397B-A17B", gpu="H100", gpus_per_node=8, precision="bf16"),
    dict(model="Qwen3.5-397B-A17B", gpu="L40S", gpus_per_node=8, precision="fp8"),
    dict(model="Qwen3.5-9B", gpu="RTX4090", gpus_per_node=1, context_length=262144, max_running_requests=64),
    dict(model="Qwen3.5-35B-A3B", gpu="A100-40GB", gpus_per_node=1, engine="vllm"),
]


def apply(request: PlanRequest, flags: str) -> PlanRequest:
    """The request with one way out's flags applied, as a user would type them."""
    name, value = flags.split(" ", 1)
    if name == "--gpu":
        key, count = value.split(":")
        return replace(request, gpu=key, gpus_per_node=int(count))
    field = name.lstrip("-").replace("-", "_")
    typed = int(value) if re.fullmatch(r"\d+", value) else value
    changed = replace(request, **{field: typed})
    return replace(changed, precision=None) if field == "model" else changed


@pytest.mark.parametrize("case", NO_FIT, ids=lambda case: f"{case['model']}-{case['gpu']}:{case['gpus_per_node']}")
def test_every_way_out_refits_when_applied_alone(case):
    request = PlanRequest(**case)
    plan = solve(request, lookup_gpu(request.gpu), resolve_model(request.model))
    assert not plan.fits and plan.ways_out
    costs = [way.gpus for way in plan.ways_out]
    assert costs == sorted(costs)
    for way in plan.ways_out:
        changed = apply(request, way.flags)
        replanned = solve(changed, lookup_gpu(changed.gpu), resolve_model(changed.model))
        assert replanned.fits, way.flags
        assert (replanned.parallel.tp, replanned.parallel.nodes, replanned.context_length,
                replanned.max_running_requests) == (way.tp, way.nodes, way.context_length, way.max_running_requests)


def test_122b_on_three_h100s_offers_no_node_count_or_context_that_fails():
    request = PlanRequest(model="Qwen3.5-122B-A10B", gpu="H100", gpus_per_node=3)
    plan = solve(request, lookup_gpu("H100"), resolve_model(request.model))
    flags = [way.flags for way in plan.ways_out]
    assert not any(flag.startswith(("--nodes", "--context-length")) for flag in flags)
    assert "--gpu H100:8" in flags


def test_multi_node_needs_nodes_and_tp_stays_off_pcie_networks():
    gpu = lookup_gpu("RTX4090")
    request = PlanRequest(model="Qwen3.5-27B", gpu="RTX4090", gpus_per_node=1, nodes=4)
    plan = solve(request, gpu, resolve_model(request.model))
    assert not plan.fits
    assert any("would span nodes" in reason and "PCIe" in reason for reason in plan.reasons)
    h100 = solve(PlanRequest(model="Qwen3.5-397B-A17B", gpu="H100", gpus_per_node=8, precision="bf16", nodes=2),
                 lookup_gpu("H100"), resolve_model("Qwen3.5-397B-A17B"))
    assert h100.fits and h100.parallel.tp == 16 and h100.parallel.nodes == 2
