"""The planner reproduces the 397B-A17B deployment table of the guides (facts §5), all 21 cells."""
import pytest

from qwen35.planner.documented import DOCUMENTED_GPUS, QWEN35_397B_TP
from qwen35.planner.errors import InputError
from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import resolve_model
from qwen35.planner.plan import PRECISIONS, PlanRequest
from qwen35.planner.solver import solve

MODEL = "Qwen3.5-397B-A17B"
CELLS = [(gpu, precision) for gpu in DOCUMENTED_GPUS for precision in PRECISIONS]


def plan_cell(gpu_key, precision, count=8):
    gpu = lookup_gpu(gpu_key)
    # The guides' two-node cells are planned with the nodes they name (multi-node only when asked).
    nodes = max(1, QWEN35_397B_TP.get((gpu_key, precision), count) // count)
    request = PlanRequest(model=MODEL, gpu=gpu.key, gpus_per_node=count, precision=precision, nodes=nodes)
    return solve(request, gpu, resolve_model(MODEL))


def test_the_table_has_21_cells():
    assert len(CELLS) == 21


@pytest.mark.parametrize("gpu_key,precision", CELLS)
def test_cell(gpu_key, precision):
    expected = QWEN35_397B_TP.get((gpu_key, precision))
    if expected is None:
        # FP4 off Blackwell: not feasible, with the reason.
        with pytest.raises(InputError) as caught:
            plan_cell(gpu_key, precision)
        assert "NVFP4 needs Blackwell" in caught.value.message
        assert gpu_key in caught.value.message
        return
    plan = plan_cell(gpu_key, precision)
    assert plan.fits, plan.reasons
    assert plan.parallel.tp == expected
    assert plan.parallel.nodes == max(1, expected // 8)
    assert len(plan.commands) == plan.parallel.nodes
    assert plan.context_length == 262144


def test_h100_bf16_is_two_nodes_with_a_command_each():
    plan = plan_cell("H100", "bf16")
    assert (plan.parallel.tp, plan.parallel.nodes) == (16, 2)
    ranks = []
    for command in plan.commands:
        argv = command.argv
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--tp-size") + 1] == "16"
        ranks.append(argv[argv.index("--node-rank") + 1])
    assert ranks == ["0", "1"]


@pytest.mark.parametrize("gpu_key", ["B200", "B300"])
def test_fp4_uses_the_fp8_cell_size_and_says_why(gpu_key):
    plan = plan_cell(gpu_key, "nvfp4")
    assert plan.parallel.tp == QWEN35_397B_TP[(gpu_key, "fp8")]
    if gpu_key == "B200":
        # FP4 weights alone would fit tp 2 on B200: the documented size wins, and the plan says so.
        assert any("validated" in reason and "memory alone would allow tp 2" in reason for reason in plan.reasons)


def test_weights_total_matches_the_guides_round_figures():
    totals = {p: plan_cell("B300", p).memory["weights_total_bytes"] for p in PRECISIONS}
    assert 780e9 < totals["bf16"] < 830e9
    assert 390e9 < totals["fp8"] < 430e9
    assert 230e9 < totals["nvfp4"] < 270e9
