"""AMD detection through a fake amdsmi: varied market names, ROCm visibility rules, failures."""
import sys

from hardware_fakes import MIB, FakeAmdGpu, FakeAmdSmi, mi300x_box, no_nvidia_driver

from qwen35.planner.hardware import detect_hardware


def detect(amdsmi, **env):
    return detect_hardware(env=env, nvml=no_nvidia_driver(), amdsmi=amdsmi)


# Market names seen for the same part on different machines and ROCm releases.
VARIED_NAMES = ["AMD Instinct MI300X", "AMD Instinct MI300X OAM", "MI300X-O", "N/A",
                "AMD Instinct MI300X VF", "", "Instinct MI300X", "0x74a1"]


def test_mi300x_box_with_varied_market_names():
    amdsmi = mi300x_box(VARIED_NAMES)
    report = detect(amdsmi)
    assert report.count == 8
    assert report.vendor == "amd" and report.source == "amdsmi"
    assert [gpu.model.key for gpu in report.gpus] == ["MI300X"] * 8
    assert report.model.key == "MI300X"
    # "N/A" and a bare device id are replaced by something readable
    assert report.gpus[3].name == report.gpus[7].name == "AMD GPU (gfx942)"
    assert all(gpu.gfx_target == "gfx942" for gpu in report.gpus)
    assert report.gpus[0].memory_total_bytes == 196592 * MIB
    assert report.gpus[0].memory_free_bytes == (196592 - 283) * MIB
    assert report.gpus[1].pci_bus_id == "0000:25:00.0"
    assert report.driver_version == "6.10.5" and report.cuda_driver_version is None
    assert report.all_pairs_linked is True and report.links[0][1] == "xgmi"
    assert report.warnings == ()  # the missing NVIDIA driver is not news on an AMD box
    assert amdsmi.calls == ["init", "shutdown"]


def test_mi325x_told_from_mi300x_by_memory_when_the_name_says_nothing():
    amdsmi = FakeAmdSmi([FakeAmdGpu("N/A", "u-0", "0000:05:00.0", 262128),
                         FakeAmdGpu("N/A", "u-1", "0000:25:00.0", 196592)])
    report = detect(amdsmi)
    assert [gpu.model.key for gpu in report.gpus] == ["MI325X", "MI300X"]


def test_gfx950_and_integer_gfx_targets():
    amdsmi = FakeAmdSmi([FakeAmdGpu("AMD Instinct MI355X", "u-0", "0000:05:00.0", 294896,
                                    gfx="gfx950:sramecc+:xnack-"),
                         FakeAmdGpu("N/A", "u-1", "0000:15:00.0", 294896, gfx=0x950)])
    report = detect(amdsmi)
    assert [gpu.gfx_target for gpu in report.gpus] == ["gfx950", "gfx950"]
    assert [gpu.model.key for gpu in report.gpus] == ["MI355X", "MI355X"]
    assert report.gpus[0].model.fp4 == "mxfp4"


def test_hip_visible_devices_indices_in_the_given_order():
    report = detect(mi300x_box(), HIP_VISIBLE_DEVICES="3,1")
    assert [gpu.physical_index for gpu in report.gpus] == [3, 1]
    assert report.visibility == "HIP_VISIBLE_DEVICES=3,1"


def test_hip_indices_count_within_what_rocr_left_visible():
    report = detect(mi300x_box(), ROCR_VISIBLE_DEVICES="4,5,6,7", HIP_VISIBLE_DEVICES="1")
    assert [gpu.physical_index for gpu in report.gpus] == [5]
    assert report.visibility == "ROCR_VISIBLE_DEVICES=4,5,6,7; HIP_VISIBLE_DEVICES=1"


def test_visible_devices_by_uuid():
    # ROCm's "GPU-<unique id>" form (HIP UUID) and amdsmi's dashed UUID both select a GPU.
    report = detect(mi300x_box(),
                    ROCR_VISIBLE_DEVICES="GPU-66c3a4,22ff74a1-0000-1000-80b4-000000000022")
    assert [gpu.physical_index for gpu in report.gpus] == [6, 2]


def test_hip_reads_cuda_visible_devices_when_hip_visible_devices_is_unset():
    report = detect(mi300x_box(), CUDA_VISIBLE_DEVICES="7")
    assert [gpu.physical_index for gpu in report.gpus] == [7]
    report = detect(mi300x_box(), CUDA_VISIBLE_DEVICES="7", HIP_VISIBLE_DEVICES="0")
    assert [gpu.physical_index for gpu in report.gpus] == [0]


def test_bad_rocm_visibility_entries_stop_the_list():
    report = detect(mi300x_box(), HIP_VISIBLE_DEVICES="0,9,1")
    assert [gpu.physical_index for gpu in report.gpus] == [0]
    assert any("HIP_VISIBLE_DEVICES entry '9'" in warning for warning in report.warnings)
    report = detect(mi300x_box(), ROCR_VISIBLE_DEVICES="")
    assert report.count == 0
    assert any("ROCR_VISIBLE_DEVICES is set but empty" in warning for warning in report.warnings)


def test_pcie_links_and_the_older_link_enum():
    report = detect(mi300x_box(xgmi=False))
    assert report.links[0][1] == "pcie" and report.all_pairs_linked is False
    report = detect(mi300x_box(old_enum=True))
    assert report.links[0][1] == "xgmi" and report.all_pairs_linked is True


def test_missing_amdsmi_gives_an_empty_report_that_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    report = detect_hardware(env={}, nvml=no_nvidia_driver())
    assert report.count == 0 and report.source == "none"
    assert any("amdsmi module is not installed" in warning for warning in report.warnings)
    assert any("libnvidia-ml.so.1" in warning for warning in report.warnings)


def test_amdsmi_init_failure_gives_an_empty_report():
    report = detect(FakeAmdSmi(init_error=True))
    assert report.count == 0
    assert any("amdgpu driver" in warning for warning in report.warnings)


def test_unknown_amd_part():
    # (An MI210 would now match the MI250X: same gfx90a and 64 GB as one of its GCDs.)
    report = detect(FakeAmdSmi([FakeAmdGpu("AMD Radeon PRO W7900", "u", "0000:05:00.0", 49136,
                                           gfx="gfx1100")]))
    assert report.gpus[0].model is None
    assert any("not in the GPU catalog" in warning for warning in report.warnings)
