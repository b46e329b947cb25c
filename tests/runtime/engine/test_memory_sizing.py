"""Pool sizing: the runner's allocated cache follows planner.memory.slot_pools for the budget it is given."""
import pytest
import torch

from qwen35.planner import memory
from qwen35.runtime.demo import demo_config, write_demo_checkpoint
from qwen35.runtime.engine.memory_sizing import budget_for, measure_budget, plan_pools, sizing_report
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model

MIB = 2**20


@pytest.fixture(scope="module")
def demo_model(demo_path):
    return load_model(demo_path, progress=False)


def test_plan_is_slot_pools_with_the_planner_unit_costs():
    text = demo_config("tiny").text
    plan = plan_pools(text, 40 * MIB, wanted_slots=8, context_length=512, page_size=16, dtype=torch.bfloat16)
    state = memory.state_bytes_per_slot(text, 1, "fp32", "bf16").value
    kv = memory.kv_bytes_per_token(text, 1, "bf16").value
    slots, tokens = memory.slot_pools(40 * MIB, state, kv, 8, 512)
    assert (plan.state_slots, plan.kv_tokens) == (slots.value, tokens.value)
    assert plan.num_pages == tokens.value // 16
    assert plan.planned_bytes <= 40 * MIB


@pytest.mark.parametrize("budget_mib, wanted, expect_all", [(40, 8, True), (12, 64, False)])
def test_allocated_pools_match_the_plan_on_cpu(demo_model, budget_mib, wanted, expect_all):
    """A given budget holds the running slots, the KV pages and the prefix cache's checkpoints together."""
    config = EngineConfig(max_running_requests=wanted, max_model_len=512, memory_budget_bytes=budget_mib * MIB,
                          prefix_checkpoints=2)
    runner, report = build_runner(demo_model, config)
    text = demo_model.config.text
    unit = plan_pools(text, budget_mib * MIB, wanted, 512, 16, torch.float32).state_bytes_per_slot
    plan = plan_pools(text, budget_mib * MIB - 2 * unit, wanted, 512, 16, torch.float32)
    assert report["state_slots"] == plan.state_slots == runner.num_slots
    assert (plan.state_slots == wanted) is expect_all  # a small budget gives fewer slots than wanted
    assert runner.num_pages == plan.num_pages
    assert report["prefix_checkpoints"] == 2 and report["checkpoint_bytes"] == pytest.approx(2 * unit, rel=1e-6)
    assert report["allocated_state_bytes"] + report["checkpoint_bytes"] == runner.cache.state_nbytes
    assert report["allocated_state_bytes"] == report["planned_state_bytes"]
    assert report["allocated_kv_bytes"] == runner.cache.kv_nbytes
    assert abs(report["allocated_over_planned"] - 1) < 0.05
    assert report["allocated_bytes"] + report["checkpoint_bytes"] <= budget_mib * MIB * 1.05
    assert "measured" not in report


def test_budget_for_fits_exactly(demo_model):
    text = demo_model.config.text
    budget = budget_for(text, slots=3, kv_tokens=3 * 300, context_length=300, dtype=torch.float32)
    plan = plan_pools(text, budget, 3, 300, 16, torch.float32)
    assert plan.state_slots == 3 and plan.kv_tokens == 900


def test_a_budget_below_one_request_is_refused(demo_model):
    with pytest.raises(ValueError, match="cannot hold one 512-token request"):
        build_runner(demo_model, EngineConfig(max_running_requests=4, max_model_len=512, memory_budget_bytes=MIB))


def test_speculation_puts_the_heads_kv_in_the_page_pool(demo_model):
    """With MTP the planner's extra KV layer is in every page, and the budget pays for it."""
    plain, _ = build_runner(demo_model, EngineConfig(max_running_requests=2, max_model_len=128))
    runner, report = build_runner(demo_model, EngineConfig(max_running_requests=2, max_model_len=128,
                                                           speculative_tokens=2))
    layers = len(demo_model.config.text.full_attention_layer_ids)
    assert set(runner.cache.key) - set(plain.cache.key) == {demo_model.config.text.num_hidden_layers}
    per_page = plain.cache.kv_nbytes / (plain.num_pages + 1)
    assert runner.cache.kv_nbytes == pytest.approx((runner.num_pages + 1) * per_page * (layers + 1) / layers)
    assert abs(report["allocated_over_planned"] - 1) < 0.05


def test_measuring_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        measure_budget(torch.device("cpu"), lambda: None)


def test_report_is_json_ready():
    text = demo_config("tiny").text
    plan = plan_pools(text, 40 * MIB, 8, 512, 16, torch.float32)
    report = sizing_report(plan, 100, 200)
    assert report["allocated_bytes"] == 300 and report["planned_bytes"] == plan.planned_bytes


@pytest.mark.gpu
def test_gpu_budget_is_measured_after_warm_up(tmp_path):
    model = load_model(write_demo_checkpoint(tmp_path / "demo"), device="cuda", dtype=torch.bfloat16, progress=False)
    free_before, total = torch.cuda.mem_get_info()
    runner, report = build_runner(model, EngineConfig(max_running_requests=8, max_model_len=4096, prefill_chunk_size=256,
                                                      cuda_graphs=False))
    measured = report["measured"]
    assert measured["total_bytes"] == total
    assert 0 < measured["budget_bytes"] < free_before
    assert measured["activation_peak_bytes"] > 0
    assert abs(report["allocated_over_planned"] - 1) < 0.05
    assert runner.num_slots == 8
    free_after, _ = torch.cuda.mem_get_info()
    # The pools took the budget: what is left is about the (1 - utilization) headroom plus the peak.
    assert free_after < free_before - 0.9 * report["planned_bytes"]
