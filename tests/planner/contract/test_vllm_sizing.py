"""Contract: vLLM's own start-up sizing agrees with the `vllm serve` commands we emit.

For a grid of vLLM plans (dense and MoE checkpoints, bf16/fp8/nvfp4, tp 1-8, dp, ep, MTP
speculation, Hopper and Blackwell on CUDA, MI300X/MI325X/MI355X on ROCm), the release must build its
config and plan its KV-cache pool for the command (one --max-model-len request fits), per replica
the plan's block size and state blocks per request must be the release's and its KV tokens, blocks
and running requests within 2% of the release's; --max-num-seqs must be within the requests whose
mamba state blocks the pool holds. The network test runs the release itself
(vllm_sizing.py) and can re-record the fixture; the fast tests compare today's plans with that
recording, so they run in CI.

The suite runs the H100:1 and MI300X:8 cases live (QWEN35_SIZING_ALL=1: all of them).
Re-record after a change to the emitted commands, the weight inventory or the working set:
    QWEN35_RECORD_SIZING=1 python -m pytest -m network tests/planner/contract/test_vllm_sizing.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwen35.planner.engines import vllm as vllm_engine
from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import registry_config_json
from qwen35.planner.plan import Plan

from . import sizing_grid
from .engine_cli import default_cache_root, index_reachable, is_installed
from .sizing_grid import CAPABILITY, case_id
from .vllm_sizing import Device, SizingCase, vllm_sizing

VERSION = "0.33.0"
FIXTURE = Path(__file__).with_name("fixtures") / f"vllm-{VERSION}-sizing.json"
TOLERANCE = 0.02
PROGRAM = ["vllm", "serve"]

# (model, GPU:count, request fields), all with --engine vllm.
GRID = [
    ("Qwen3.5-0.8B", "H100:1", {}),
    ("Qwen3.5-2B", "H100:1", {"strategy": "latency"}),
    ("Qwen3.5-4B", "H200:1", {}),
    ("Qwen3.5-9B", "H100:1", {"precision": "fp8"}),
    ("Qwen3.5-9B", "H100:2", {"tp": 2}),
    ("Qwen3.5-9B", "B200:1", {"precision": "fp8"}),
    ("Qwen3.5-27B", "H200:2", {}),
    ("Qwen3.5-27B", "H100:4", {"strategy": "latency"}),
    ("Qwen3.5-35B-A3B", "H100:8", {}),
    ("Qwen3.5-35B-A3B", "H200:8", {"precision": "fp8", "strategy": "latency"}),
    ("Qwen3.5-35B-A3B", "H100:4", {"tp": 4, "ep": 4}),
    ("Qwen3.5-122B-A10B", "H200:8", {"precision": "fp8"}),
    ("Qwen3.5-122B-A10B", "H100:8", {"precision": "fp8"}),
    ("Qwen3.5-397B-A17B", "H100:8", {"precision": "fp8"}),
    ("Qwen3.5-397B-A17B", "H200:8", {"precision": "fp8", "strategy": "latency"}),
    ("Qwen3.5-397B-A17B", "B200:8", {"precision": "nvfp4"}),
    # Ada, Ampere, consumer Blackwell, B300, H20; requested limits; the throughput strategy.
    ("Qwen3.5-0.8B", "RTX4090:1", {}),
    ("Qwen3.5-4B", "L40S:1", {"precision": "fp8"}),
    ("Qwen3.5-4B", "L4:1", {"precision": "fp8"}),
    ("Qwen3.5-9B", "RTX5090:1", {"precision": "fp8"}),
    ("Qwen3.5-27B", "B300:1", {}),
    ("Qwen3.5-27B", "A100-80GB:4", {}),
    ("Qwen3.5-35B-A3B", "B200:8", {"precision": "fp8", "strategy": "throughput"}),
    ("Qwen3.5-122B-A10B", "B200:4", {"precision": "fp8"}),
    ("Qwen3.5-122B-A10B", "H200:8", {"strategy": "latency"}),
    ("Qwen3.5-397B-A17B", "B300:8", {}),
    ("Qwen3.5-2B", "H100:1", {"max_running_requests": 64, "context_length": 32768}),
    ("Qwen3.5-9B", "H20:2", {"strategy": "throughput"}),
    # AMD, on vLLM's ROCm platform.
    ("Qwen3.5-9B", "MI300X:1", {"precision": "fp8"}),
    ("Qwen3.5-27B", "MI325X:2", {"tp": 2, "strategy": "latency"}),
    ("Qwen3.5-35B-A3B", "MI300X:8", {}),
    ("Qwen3.5-122B-A10B", "MI325X:4", {"precision": "fp8", "tp": 4}),
    ("Qwen3.5-397B-A17B", "MI355X:8", {"precision": "fp8"}),
]


def plan_entry(entry) -> Plan:
    return sizing_grid.plan_entry(entry, "vllm", VERSION)


def sizing_case(plan: Plan) -> SizingCase:
    """What the release is asked: the command, on the plan's GPU, after our weights are loaded."""
    gpu = lookup_gpu(plan.gpu)
    command = plan.commands[0]
    assert command.argv[:len(PROGRAM)] == PROGRAM
    device = Device(total_bytes=int(plan.memory["gpu_memory_bytes"]), capability=CAPABILITY[gpu.arch],
                    count=plan.request.gpus_per_node, name=gpu.key,
                    gcn_arch=gpu.arch if gpu.vendor == "amd" else None)
    # Assumption: the profiling run's non-KV working set is the planner's estimate (see vllm_sizing.py).
    return SizingCase(argv=command.argv[len(PROGRAM):], config=registry_config_json(plan.model, plan.precision),
                      device=device, weights_bytes=int(plan.memory["weights_per_gpu_bytes"]),
                      working_set_bytes=int(vllm_engine.WORKING_SET_BYTES))


def ours(plan: Plan) -> dict:
    """The plan's per-replica figures, named as the harness names the release's."""
    return {"kv_cache_tokens": plan.memory["kv_tokens"], "num_blocks": plan.memory["state_slots"],
            "max_num_seqs": plan.max_running_requests // plan.parallel.dp}


def layout(plan: Plan) -> dict:
    """The plan's block layout, which must be the release's exactly: tokens per block, state blocks per request."""
    return {"block_size": plan.memory["block_tokens"],
            "state_blocks_per_request": plan.memory["state_slots_per_request"]}


def disagreements(plan: Plan, engine: dict) -> dict:
    """Figure -> (ours, the release's) where the layout differs or a figure differs by more than TOLERANCE."""
    apart = {name: (value, engine[name]) for name, value in ours(plan).items()
             if abs(value - engine[name]) > TOLERANCE * engine[name]}
    return apart | {name: (value, engine[name]) for name, value in layout(plan).items() if value != engine[name]}


def state_overflow(engine: dict) -> bool:
    """Whether --max-num-seqs requests' mamba state blocks exceed the pool the release plans."""
    return engine["max_num_seqs"] * engine["state_blocks_per_request"] > engine["num_blocks"]


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def test_the_grid_covers_what_the_issue_asks():
    plans = [plan_entry(entry) for entry in GRID]
    assert len(plans) >= 12
    assert {plan.precision for plan in plans} == {"bf16", "fp8", "nvfp4"}
    assert {plan.parallel.tp for plan in plans} >= {1, 2, 4, 8}
    assert any(plan.parallel.dp > 1 for plan in plans) and any(plan.parallel.ep > 1 for plan in plans)
    assert any(plan.speculative for plan in plans) and any(not plan.speculative for plan in plans)
    assert any("A" in plan.model.split("-")[-1] for plan in plans) and any(plan.model.endswith("B") for plan in plans)
    amd = [plan for plan in plans if lookup_gpu(plan.gpu).vendor == "amd"]
    assert len(amd) >= 4 and {plan.parallel.tp for plan in amd} >= {1, 2}
    assert {lookup_gpu(plan.gpu).arch for plan in amd} == {"gfx942", "gfx950"}
    assert any(plan.speculative for plan in amd) and {plan.precision for plan in amd} == {"bf16", "fp8"}
    assert any("A" in plan.model.split("-")[-1] for plan in amd) and any(plan.model.endswith("B") for plan in amd)


def test_amd_plans_were_sized_on_the_rocm_platform():
    """The AMD cases ran vLLM's ROCm code: its selector's first attention backend, Triton GDN prefill."""
    recorded = load_fixture()["cases"]
    for entry in GRID:
        engine = recorded[case_id(entry)]["engine"]
        amd = lookup_gpu(entry[1].split(":")[0]).vendor == "amd"
        assert (engine["attention_backend"] == "ROCM_ATTN") == amd, (case_id(entry), engine["attention_backend"])
        if amd:
            assert (engine["gdn_prefill_backend"], engine["checkpoint_blocks"]) == ("triton", 0), case_id(entry)


def test_the_recording_is_of_todays_commands():
    recorded = load_fixture()
    assert recorded["version"] == VERSION
    for entry in GRID:
        name = case_id(entry)
        assert name in recorded["cases"], f"{name} is not recorded: re-record (see the module docstring)"
        case = sizing_case(plan_entry(entry))
        stored = recorded["cases"][name]
        assert (stored["argv"], stored["weights_bytes"], stored["working_set_bytes"]) == (
            case.argv, case.weights_bytes, case.working_set_bytes), (
            f"{name}: the plan's command changed since the recording; re-record (see the module docstring)")


@pytest.mark.parametrize("entry", GRID, ids=case_id)
def test_the_release_starts_with_what_the_plan_says(entry):
    engine = load_fixture()["cases"][case_id(entry)]["engine"]
    assert engine["error"] is None, engine["error"]
    assert not state_overflow(engine)
    assert not disagreements(plan_entry(entry), engine)


# The release runs once per device kind (3.5 minutes for the whole grid): the suite runs the kinds
# of a CUDA and a ROCm GPU live, the rest from the recording; QWEN35_SIZING_ALL=1 or recording runs all.
LIVE_TARGETS = ("H100:1", "MI300X:8")
LIVE_GRID = GRID if os.environ.get("QWEN35_RECORD_SIZING") or os.environ.get("QWEN35_SIZING_ALL") \
    else [entry for entry in GRID if entry[1] in LIVE_TARGETS]


@pytest.mark.network
def test_sizing_against_the_release_itself():
    if not is_installed("vllm-sizing", VERSION) and not index_reachable():
        pytest.skip(f"vllm {VERSION} is not cached in {default_cache_root()} and the package index is unreachable")
    plans = [plan_entry(entry) for entry in LIVE_GRID]
    cases = [sizing_case(plan) for plan in plans]
    results = vllm_sizing(VERSION, cases)
    if os.environ.get("QWEN35_RECORD_SIZING"):
        FIXTURE.parent.mkdir(exist_ok=True)
        recorded = {case_id(entry): {"argv": case.argv, "weights_bytes": case.weights_bytes,
                                     "working_set_bytes": case.working_set_bytes, "engine": result}
                    for entry, case, result in zip(LIVE_GRID, cases, results)}
        FIXTURE.write_text(json.dumps({"version": VERSION, "cases": recorded}, indent=1) + "\n")
    refused = {case_id(entry): result["error"] for entry, result in zip(LIVE_GRID, results) if result["error"]}
    assert not refused
    assert not [case_id(entry) for entry, result in zip(LIVE_GRID, results) if state_overflow(result)]
    apart = {case_id(entry): disagreements(plan, result) for entry, plan, result in zip(LIVE_GRID, plans, results)}
    assert not {name: figures for name, figures in apart.items() if figures}
    # What runs live must be what was recorded: the fast tests trust the recording for the rest.
    recorded = load_fixture()["cases"]
    assert {case_id(entry): recorded[case_id(entry)]["engine"] for entry in LIVE_GRID} == {
        case_id(entry): result for entry, result in zip(LIVE_GRID, results)}
