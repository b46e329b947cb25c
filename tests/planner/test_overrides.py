"""--tp / --dp / --ep: honoured when the model and the engine can run them, refused with the reason otherwise."""
import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.hardware.catalog import lookup_gpu
from qwen35.planner.models.registry import resolve_model
from qwen35.planner.plan import PlanRequest
from qwen35.planner.solver import solve


def plan(model, target, **fields):
    key, count = target.split(":")
    return solve(PlanRequest(model=model, gpu=key, gpus_per_node=int(count), **fields), lookup_gpu(key),
                 resolve_model(model))


def test_tp_and_dp_are_honoured_and_said():
    chosen = plan("Qwen3.5-122B-A10B", "H200:8", tp=4, dp=2)
    assert chosen.fits and (chosen.parallel.tp, chosen.parallel.dp) == (4, 2)
    assert "tp 4: as asked (--tp 4)" in chosen.reasons and "dp 2: as asked (--dp 2)" in chosen.reasons
    assert "--tp-size" in chosen.commands[0].argv and chosen.commands[0].argv[chosen.commands[0].argv.index("--tp-size") + 1] == "4"


def test_forced_tp_skips_the_guide_and_may_not_fit():
    assert plan("Qwen3.5-397B-A17B", "H200:8", precision="fp8", tp=8).parallel.tp == 8
    assert not plan("Qwen3.5-122B-A10B", "H200:8", tp=1).fits


def test_ep_is_honoured_on_moe_models():
    chosen = plan("Qwen3.5-122B-A10B", "H200:8", tp=8, ep=8)
    assert chosen.fits and chosen.parallel.ep == 8


REFUSED = {
    "heads that do not divide": (("Qwen3.5-0.8B", "H100:8"), dict(tp=16, nodes=2), "does not divide the 8 attention heads"),
    "not a power of two": (("Qwen3.5-9B", "H100:8"), dict(tp=3), "tp 3"),
    "more GPUs than given": (("Qwen3.5-9B", "H100:8"), dict(tp=16), "needs 16 GPUs"),
    "fp8 block-128 shards": (("Qwen3.5-35B-A3B", "H100:8"), dict(precision="fp8", tp=8, ep=1), "128-column FP8 blocks"),
    "fp8 dense shards": (("Qwen3.5-4B", "H100:8"), dict(precision="fp8", tp=16, nodes=2), "128-column FP8 blocks"),
    "ep on a dense model": (("Qwen3.5-9B", "H100:8"), dict(tp=2, ep=2), "dense model"),
    "ep not the tp group": (("Qwen3.5-122B-A10B", "H200:8"), dict(tp=4, ep=2), "whole TP group"),
    "dp over the node": (("Qwen3.5-9B", "H100:8"), dict(tp=2, dp=8), "need 16 GPUs in a node of 8"),
    "dp on the bundled runtime": (("Qwen3.5-0.8B", "H100:1"), dict(engine="bundled", dp=2), "one replica"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_overrides_refused_with_the_reason(case):
    (model, target), fields, why = case
    with pytest.raises(InputError) as caught:
        plan(model, target, **fields)
    assert why in caught.value.message and caught.value.hint


def test_idle_gpus_are_named_in_why():
    chosen = plan("Qwen3.5-35B-A3B", "H100:3")
    used = chosen.parallel.tp * chosen.parallel.dp
    assert chosen.fits and used < 3
    assert f"{3 - used} of 3 GPUs idle: 1 replica of tp {chosen.parallel.tp} uses {used}; another replica needs " \
           f"{chosen.parallel.tp} more" in chosen.reasons
    filled = plan("Qwen3.5-9B", "H100:2")
    assert filled.parallel.tp * filled.parallel.dp == 2
    assert not any("idle" in reason for reason in filled.reasons)


def test_idle_gpus_beside_replicas_are_not_called_filled():
    chosen = plan("Qwen3.5-35B-A3B", "H100:5")
    assert (chosen.parallel.tp, chosen.parallel.dp) == (2, 2)
    assert "1 of 5 GPUs idle: 2 replicas of tp 2 use 4; another replica needs 2 more" in chosen.reasons
    assert not any("fill" in reason for reason in chosen.reasons)


def test_idle_gpus_of_an_engine_without_replicas_say_why():
    chosen = plan("Qwen3.5-9B", "H100:3", engine="bundled")
    assert "2 of 3 GPUs idle: 1 replica of tp 1 uses 1; the bundled runtime runs one replica per process" in chosen.reasons
