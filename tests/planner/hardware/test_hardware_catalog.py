"""The GPU catalog: facts §6 parts, alias lookups, "H200:8" targets, detected-name matching."""
import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.hardware import GPU_MODELS, lookup_gpu, match_detected, parse_gpu_target

MIB = 1 << 20

# facts §6: GPU, guide memory (GB), arch, FP8, FP4
FACTS_SECTION_6 = [
    ("H100", 80, "sm90", True, None),
    ("H200", 141, "sm90", True, None),
    ("B200", 183, "sm100", True, "nvfp4"),
    ("B300", 275, "sm103", True, "nvfp4"),
    ("MI300X", 192, "gfx942", True, None),
    ("MI325X", 256, "gfx942", True, None),
    ("MI355X", 288, "gfx950", True, "mxfp4"),
]


@pytest.mark.parametrize("key, guide_gb, arch, fp8, fp4", FACTS_SECTION_6)
def test_every_facts_gpu_is_present_with_its_precisions(key, guide_gb, arch, fp8, fp4):
    model = lookup_gpu(key)
    assert (model.key, model.guide_memory_gb, model.arch, model.fp8, model.fp4) == (
        key, guide_gb, arch, fp8, fp4)
    # FP4 is a Blackwell feature on NVIDIA (facts §3, §5)
    if model.vendor == "nvidia":
        assert model.blackwell == (fp4 is not None)


def test_the_other_required_parts_are_present():
    for key in ("GB200", "A100-40GB", "A100-80GB", "L40S", "H20", "RTX 4090", "RTX 5090"):
        lookup_gpu(key)
    assert lookup_gpu("A100-40GB").fp8 is False and lookup_gpu("L40S").fp8 is True
    assert lookup_gpu("GB200").fp4 == "nvfp4" and lookup_gpu("GB200").compute_capability == (10, 0)
    assert lookup_gpu("RTX 5090").arch == "sm120"
    assert lookup_gpu("MI300X").compute_capability is None


def test_keys_are_unique_and_each_alias_finds_its_own_model():
    keys = [model.key for model in GPU_MODELS]
    assert len(keys) == len(set(keys))
    for model in GPU_MODELS:
        for name in (model.key, model.marketing_name, *model.aliases):
            assert lookup_gpu(name) is model, name


@pytest.mark.parametrize("model", GPU_MODELS, ids=lambda model: model.key)
def test_reported_memory_is_close_to_the_guide_figure(model):
    # Reported totals are in MiB; guide figures in (decimal or binary) GB. A slip of units or a
    # typo lands far outside this band.
    assert 0.95 <= model.memory_bytes / (model.guide_memory_gb * 1e9) <= 1.1
    assert model.memory_bandwidth_gbps >= 300 and model.interconnect_gbps >= 64  # L4: 300 GB/s
    assert model.default_count >= 1


def test_h100_reports_what_nvml_reports():
    assert lookup_gpu("H100").memory_bytes == 81559 * MIB


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("nvidia h100 pcie", "H100"),
    ("H100 SXM5", "H100"),
    ("h200", "H200"),
    ("NVIDIA B300 SXM6 AC", "B300"),
    ("AMD Instinct MI300X", "MI300X"),
    ("MI300X-O", "MI300X"),
    ("mi300x", "MI300X"),
    ("rtx 4090", "RTX4090"),
    ("RTX4090", "RTX4090"),
    ("NVIDIA GeForce RTX 5090", "RTX5090"),
    ("a100-80gb", "A100-80GB"),
    ("A100 80GB", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("  gb200 ", "GB200"),
])
def test_lookup_by_key_or_alias(name, key):
    assert lookup_gpu(name).key == key


def test_unknown_name_lists_known_gpus_and_the_closest():
    with pytest.raises(InputError) as raised:
        lookup_gpu("H1000")
    error = raised.value
    assert error.exit_code == 2
    assert "H1000" in error.message
    assert "did you mean H100?" in error.hint
    assert all(model.key in error.hint for model in GPU_MODELS)


@pytest.mark.parametrize("text, key, count", [
    ("H200:8", "H200", 8),
    ("h100:2", "H100", 2),
    ("H100", "H100", 8),
    ("MI355X", "MI355X", 8),
    ("GB200", "GB200", 4),
    ("RTX 4090", "RTX4090", 1),
    (" MI300X : 4 ", "MI300X", 4),
])
def test_parse_gpu_target(text, key, count):
    model, parsed = parse_gpu_target(text)
    assert (model.key, parsed) == (key, count)


@pytest.mark.parametrize("text", ["H200:0", "H200:-1", "H200:1.5", "H200:x", "H200:", "H200:８",
                                  "Z9000:8", ":8", ""])
def test_bad_gpu_targets_are_input_errors(text):
    with pytest.raises(InputError) as raised:
        parse_gpu_target(text)
    assert raised.value.exit_code == 2


def test_bad_count_error_suggests_a_valid_target():
    with pytest.raises(InputError) as raised:
        parse_gpu_target("H200:0")
    assert "H200:8" in raised.value.hint


@pytest.mark.parametrize("name, memory_mib, gfx, key", [
    ("NVIDIA H100 80GB HBM3", 81559, None, "H100"),
    ("NVIDIA H100 80GB HBM3", None, None, "H100"),  # an exact alias needs no memory
    ("NVIDIA A100 custom board", 81920, None, "A100-80GB"),  # family word, memory decides
    ("NVIDIA A100 custom board", 40960, None, "A100-40GB"),
    ("NVIDIA H100 NVL", 95830, None, None),  # 94 GB part: not our H100
    ("NVIDIA H20-3e", 143771, None, None),  # the 141 GB H20 is not our H20, nor an H200
    ("NVIDIA GB200", 189471, None, "GB200"),
    ("AMD Instinct MI300X VF", 196592, "gfx942", "MI300X"),
    ("N/A", 262128, "gfx942:sramecc+:xnack-", "MI325X"),
    ("", 196592, 0x942, "MI300X"),
    ("", None, "gfx942", None),  # MI300X or MI325X: cannot tell without memory
    ("", 294896, "gfx950", "MI355X"),
    ("Tesla T4", 15360, None, None),
])
def test_match_detected(name, memory_mib, gfx, key):
    model = match_detected(name, memory_mib * MIB if memory_mib else None, gfx)
    assert (model.key if model else None) == key


RENTED = ("L4", "L40", "L40S", "A10G", "A100-40GB", "A100-80GB", "H20", "H100", "H200", "H800", "B200", "B300",
          "GB200", "RTX4090", "RTX5090", "MI250X", "MI300X", "MI325X", "MI355X")


def test_the_catalogue_covers_what_people_rent_with_memory_precisions_and_links():
    from qwen35.planner.hardware.catalog import lookup_gpu

    for key in RENTED:
        gpu = lookup_gpu(key)
        assert gpu.key == key and gpu.memory_bytes > 16 << 30 and gpu.interconnect and gpu.interconnect_gbps > 0
        assert gpu.fp4 in (None, "nvfp4", "mxfp4") and isinstance(gpu.fp8, bool)
    assert not lookup_gpu("A10G").fp8 and not lookup_gpu("MI250X").fp8 and lookup_gpu("L4").fp8
    assert not lookup_gpu("L4").tp_across_nodes and lookup_gpu("H800").tp_across_nodes


@pytest.mark.parametrize("key", RENTED)
def test_every_catalogue_gpu_plans_the_small_models_or_says_why(key):
    from qwen35.planner.errors import InputError
    from qwen35.planner.hardware.catalog import lookup_gpu
    from qwen35.planner.models.registry import resolve_model
    from qwen35.planner.plan import PlanRequest
    from qwen35.planner.solver import solve

    gpu = lookup_gpu(key)
    for name in ("Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B"):
        try:
            plan = solve(PlanRequest(model=name, gpu=key, gpus_per_node=1), gpu, resolve_model(name))
        except InputError as error:
            assert error.hint
            continue
        assert plan.fits or (plan.reasons and plan.ways_out), (key, name)
    assert solve(PlanRequest(model="Qwen3.5-0.8B", gpu=key, gpus_per_node=1), gpu,
                 resolve_model("Qwen3.5-0.8B")).fits


def test_unknown_gpu_keeps_did_you_mean_and_names_gpu_memory():
    from qwen35.planner.errors import InputError
    from qwen35.planner.hardware.catalog import gpu_for

    with pytest.raises(InputError) as caught:
        gpu_for("T4")
    assert "did you mean" in caught.value.hint and "--gpu-memory" in caught.value.hint
    custom = gpu_for("A6000", 48 << 30)
    assert custom.memory_bytes == 48 << 30 and not custom.fp8 and not custom.tp_across_nodes


def test_a_detected_gpu_outside_the_catalogue_plans_with_its_measured_memory(monkeypatch):
    from types import SimpleNamespace

    from qwen35.planner.hardware import detect
    from qwen35.planner.hardware.target import resolve_target

    card = SimpleNamespace(name="NVIDIA RTX A6000", memory_total_bytes=51527024640)
    monkeypatch.setattr(detect, "detect_hardware",
                        lambda: SimpleNamespace(gpus=[card, card], model=None, warnings=[]))
    model, count, measured, notes = resolve_target("auto", None)
    assert (model.key, count, measured, model.memory_bytes) == ("NVIDIA RTX A6000", 2, 51527024640, 51527024640)
    assert any("not in the catalogue" in note for note in notes)
