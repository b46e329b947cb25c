"""The SGLang command carries what each replica's own start-up sizing reads."""
import math

import pytest

from qwen35.planner.engines import sglang
from qwen35.planner.engines.settings import Candidate
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


GIB = 1 << 30
MIB = 1 << 20


def test_mem_fraction_is_the_releases_default_with_its_vision_factor():
    h100 = 81559 << 20
    # 0.5.23 on H100, tp 8: 512 + 1.5 x 8192 + 8/8 x 1024 + 2 x 512 + 8 x 58 prefill graphs = 15312 MiB.
    base = round((81559 - 15312) / 81559, 3)
    # A 1152-wide vision tower read as 24 layers: 0.95 x (1 - 0.1 x (1152^2 / 1024^2 - 1)).
    factor = 0.95 * (1 - 0.1 * (1152 ** 2 / 1024 ** 2 - 1))
    figure = sglang.mem_fraction(h100, tp=8, version="0.5.23", vendor="nvidia", vision_hidden_size=1152, speculative=False)
    assert figure.value == math.floor(base * factor * 1000) / 1000 and figure.value < base
    # A 768-wide tower gets the factor's 1.05 ceiling; none without a vision tower.
    assert sglang.vision_factor(768) == pytest.approx(0.95 * 1.04375) and sglang.vision_factor(None) == 1.0


def test_mem_fraction_follows_the_release():
    h200 = 143771 << 20
    # 512 + 1.5 x 8192 + 1/8 x 1024 + 2 x 256 + 8 x 58 = 13904 MiB; 0.5.13.post1 adds 4 GiB for EAGLE.
    newer = sglang.mem_fraction(h200, tp=1, version="0.5.23", vendor="nvidia", vision_hidden_size=None, speculative=True)
    older = sglang.mem_fraction(h200, tp=1, version="0.5.13.post1", vendor="nvidia", vision_hidden_size=None,
                                speculative=True)
    assert older.value == math.floor(round((143771 - 13904 - 4096) / 143771, 3) * 1000) / 1000 < newer.value
    # 0.5.20 raised the RTX 4090's chunked prefill and graph batch size; ROCm captures no prefill graphs from 0.5.23.
    assert sglang.defaults(23034 << 20, tp=1, version="0.5.19") == (2048, 24)
    assert sglang.defaults(23034 << 20, tp=1, version="0.5.23") == (4096, 48)
    mi300x = 196592 << 20
    rocm = sglang.mem_fraction(mi300x, tp=1, version="0.5.23", vendor="amd", vision_hidden_size=None, speculative=False)
    cuda = sglang.mem_fraction(mi300x, tp=1, version="0.5.23", vendor="nvidia", vision_hidden_size=None, speculative=False)
    assert rocm.value > cuda.value


def pools(**overrides):
    arguments = dict(gpu_bytes=80 * GIB, vendor="nvidia", nodes=1, version="0.5.23", tp=1, context=262144,
                     weights_bytes=40 * GIB, kv_per_token=15360, state_per_slot=24 * MIB, page_size=64,
                     mamba_strategy="extra_buffer", disable_radix_cache=False, draft_tokens=0, requested_running=None,
                     vision_hidden_size=1152)
    return sglang.size(Candidate(**{**arguments, **overrides}))


def test_pools_split_what_the_weights_leave_by_the_mamba_ratio_with_a_padding_slot():
    sized = pools()
    # The cuda_ipc feature transport (single node, NVIDIA) reserves 100 + 1024 MiB for multimodal buffers.
    rest = sized.static_bytes - 40 * GIB - 1124 * MIB
    state = 24 * MIB
    assert sized.state_slots == int((rest * 0.9 / 1.9 - state) // state)
    left = rest - (sized.state_slots + 1) * state
    assert sized.kv_tokens == int(left // 15360) // 64 * 64
    assert sized.slots_per_request == 5
    assert sized.max_running == min(sized.kv_tokens // 2, sized.state_slots // 5, 2048) and sized.binding == "state slots"


def test_pools_on_two_nodes_reserve_no_feature_transport():
    assert pools(nodes=2).kv_tokens > pools().kv_tokens


def test_speculation_holds_draft_states_for_the_capped_requests():
    plain, spec = pools(weights_bytes=30 * GIB), pools(weights_bytes=30 * GIB, draft_tokens=4)
    assert spec.state_slots < plain.state_slots
    assert spec.max_running == 48 and spec.binding == "SGLang's speculation cap"
    intermediate = next(f for f in spec.figures if f.name == "spec_intermediate_state_bytes")
    assert intermediate.value == 24 * MIB * (48 + 1) * 4


def test_without_the_radix_cache_the_state_pool_is_the_running_limit():
    sized = pools(disable_radix_cache=True, mamba_strategy="no_buffer", page_size=16, requested_running=100)
    assert (sized.state_slots, sized.max_running, sized.slots_per_request) == (100, 100, 1)
    assert sized.binding == "the requested value"
    rest = sized.static_bytes - 40 * GIB - 1124 * MIB
    assert sized.kv_tokens == int((rest - 101 * 24 * MIB) // 15360) // 16 * 16


def test_a_guide_size_that_needs_less_headroom_says_so():
    # 397B BF16 on MI325X: the guide's tp 4 fits only without the vision-tower share of SGLang's default.
    plan = plan_for("Qwen3.5-397B-A17B", "MI325X:8", precision="bf16")
    assert plan.parallel.tp == 4 and plan.fits
    warning = next(w for w in plan.warnings if "is above SGLang" in w)
    default = sglang.mem_fraction(lookup_gpu("MI325X").memory_bytes, tp=4, version=plan.engine_version, vendor="amd",
                                  vision_hidden_size=1152, speculative=False).value
    assert plan.mem_fraction_static > default and f"{default:.3f}" in warning and "tp 4" in warning
    # Where the guide's size fits with the whole default headroom, nothing is given up.
    plain = plan_for("Qwen3.5-397B-A17B", "H200:8", precision="fp8")
    assert not any("is above SGLang" in w for w in plain.warnings)
    assert plain.reasons[0].startswith("tp 4: matches the deployment guide")
