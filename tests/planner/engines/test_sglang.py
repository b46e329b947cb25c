"""The SGLang command carries what each replica's own start-up sizing reads."""
import pytest

from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import resolve_model
from qwen35.planner.plan import PlanRequest
from qwen35.planner.solver import solve


def plan_for(model, gpu_target, **fields):
    key, count = gpu_target.split(":")
    gpu = lookup_gpu(key)
    return solve(PlanRequest(model=model, gpu=gpu.key, gpus_per_node=int(count), **fields), gpu, resolve_model(model))


def flag(plan, name):
    argv = plan.commands[0].argv
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("model,gpu_target,fields", [
    ("Qwen3.5-0.8B", "MI300X:8", {}),
    ("Qwen3.5-9B", "H100:8", {}),
    ("Qwen3.5-35B-A3B", "H200:8", {"precision": "fp8", "strategy": "latency"}),
])
def test_max_running_requests_is_per_replica(model, gpu_target, fields):
    plan = plan_for(model, gpu_target, **fields)
    dp = plan.parallel.dp
    assert dp > 1
    per_replica = int(flag(plan, "--max-running-requests"))
    # Without --enable-dp-attention every replica reads the flag as its own limit.
    assert "--enable-dp-attention" not in plan.commands[0].argv
    assert per_replica * dp == plan.max_running_requests
    # Each replica's state pool holds what the flag asks of it.
    memory = plan.memory
    assert per_replica * memory["state_slots_per_request"] <= memory["state_slots"]
    if plan.speculative:
        assert per_replica <= 48  # SGLang's cap with speculation, which the plan keeps


def test_amd_replica_state_pool_fits_the_gpu():
    # With the radix cache off SGLang sizes the state pool from --max-running-requests itself.
    plan = plan_for("Qwen3.5-0.8B", "MI300X:8")
    memory = plan.memory
    state_bytes = int(flag(plan, "--max-running-requests")) * memory["state_bytes_per_request_per_gpu"]
    assert state_bytes + memory["weights_per_gpu_bytes"] < memory["static_bytes"]


def test_no_buffer_with_the_radix_cache_turns_the_overlap_scheduler_off():
    plan = plan_for("Qwen3.5-9B", "H100:1", mamba_strategy="no_buffer")
    argv = plan.commands[0].argv
    assert flag(plan, "--mamba-radix-cache-strategy") == "no_buffer"
    assert "--disable-radix-cache" not in argv
    assert "--disable-overlap-schedule" in argv


@pytest.mark.parametrize("gpu_target", ["H100:1", "MI300X:1"])
def test_overlap_scheduler_stays_on_where_no_buffer_is_not_under_the_radix_cache(gpu_target):
    # extra_buffer runs with overlap; on AMD no_buffer comes with the radix cache off, which the check skips.
    plan = plan_for("Qwen3.5-9B", gpu_target)
    assert "--disable-overlap-schedule" not in plan.commands[0].argv
