"""NVIDIA detection through a fake pynvml: visibility rules, MIG, links, failures."""
import sys

import pytest
from hardware_fakes import MIB, FakeNvml, FakeNvmlGpu, NVMLError, h100_box

from qwen35.planner.hardware import detect_hardware, lookup_gpu


def detect(nvml, **env):
    return detect_hardware(env=env, nvml=nvml)


@pytest.fixture
def no_amdsmi(monkeypatch):
    """Make `import amdsmi` fail, as on a machine without ROCm."""
    monkeypatch.setitem(sys.modules, "amdsmi", None)


def test_eight_h100s_on_nvlink():
    nvml = h100_box()
    report = detect(nvml)
    assert report.count == 8
    assert report.vendor == "nvidia" and report.source == "nvml"
    assert report.driver_version == "570.124.06" and report.cuda_driver_version == "12.8"
    assert [gpu.physical_index for gpu in report.gpus] == list(range(8))
    assert all(gpu.model is lookup_gpu("H100") for gpu in report.gpus)
    assert report.model is lookup_gpu("H100")
    assert report.gpus[0].compute_capability == (9, 0)
    assert report.gpus[4].pci_bus_id == "00000000:9A:00.0"
    assert report.gpus[0].memory_total_bytes == 81559 * MIB
    assert report.gpus[0].memory_free_bytes == 81000 * MIB
    assert report.total_memory_bytes == 8 * 81559 * MIB
    assert report.all_pairs_linked is True
    assert report.links[0][0] == "self" and report.links[0][7] == "nvlink"
    assert report.warnings == ()
    # every pair asked once, with the NVLink capability index; NVML shut down afterwards
    p2p = [call for call in nvml.calls if call.startswith("p2p")]
    assert len(p2p) == 28 and all(call.endswith(" 2") for call in p2p)
    assert nvml.calls[-1] == "shutdown"


def test_cuda_visible_devices_by_uuid_picks_a_subset_in_the_given_order():
    report = detect(h100_box(),
                    CUDA_VISIBLE_DEVICES="GPU-5555,GPU-2222aaaa-0000-1111-2222-333344445552")
    assert [gpu.physical_index for gpu in report.gpus] == [5, 2]
    assert [gpu.index for gpu in report.gpus] == [0, 1]
    assert report.gpus[1].uuid == "GPU-2222aaaa-0000-1111-2222-333344445552"
    assert report.visibility.startswith("CUDA_VISIBLE_DEVICES=GPU-5555")
    assert report.warnings == ()


def test_cuda_visible_devices_by_pci_bus_id_out_of_order():
    report = detect(h100_box(), CUDA_VISIBLE_DEVICES="00000000:9A:00.0,0000:18:00.0, 2a:00.0")
    assert [gpu.physical_index for gpu in report.gpus] == [4, 0, 1]
    assert report.all_pairs_linked is True
    assert any("PCI bus id" in warning for warning in report.warnings)


def test_plain_indices_follow_pci_order_on_a_uniform_box():
    report = detect(h100_box(), CUDA_VISIBLE_DEVICES="3,1")
    assert [gpu.physical_index for gpu in report.gpus] == [3, 1]
    assert report.warnings == ()


def test_an_invalid_entry_hides_itself_and_everything_after_it():
    report = detect(h100_box(4), CUDA_VISIBLE_DEVICES="0,2,-1,1")
    assert [gpu.physical_index for gpu in report.gpus] == [0, 2]
    assert any("'-1'" in warning and "(1)" in warning for warning in report.warnings)


@pytest.mark.parametrize("value, reason", [
    ("GPU-", "several GPU UUIDs"),
    ("GPU-ffff", "no GPU UUID"),
    ("0,0", "repeats"),
    ("eight", "neither"),
    ("7", "not a GPU index"),
])
def test_entries_naming_nothing_are_reported(value, reason):
    report = detect(h100_box(4), CUDA_VISIBLE_DEVICES=value)
    assert any(reason in warning for warning in report.warnings), report.warnings


def test_empty_cuda_visible_devices_hides_every_gpu(no_amdsmi):
    report = detect(h100_box(), CUDA_VISIBLE_DEVICES="")
    assert report.count == 0 and report.source == "nvml"
    assert any("set but empty" in warning for warning in report.warnings)
    # NVML did find GPUs, so a missing amdsmi is not worth mentioning
    assert not any("amdsmi" in warning for warning in report.warnings)


def mixed_box():
    return FakeNvml([
        FakeNvmlGpu("NVIDIA A100-SXM4-80GB", "GPU-a100", "00000000:18:00.0", 81920,
                    capability=(8, 0)),
        FakeNvmlGpu("NVIDIA H100 80GB HBM3", "GPU-h100", "00000000:2A:00.0", 81559),
    ], nvlink=[])


def test_plain_indices_on_mixed_gpus_warn_unless_pci_order_is_set():
    report = detect(mixed_box(), CUDA_VISIBLE_DEVICES="1")
    assert [gpu.name for gpu in report.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning for warning in report.warnings)
    report = detect(mixed_box(), CUDA_VISIBLE_DEVICES="1", CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert report.warnings == ()


def test_mixed_gpus_are_flagged():
    report = detect(mixed_box(), CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert report.model is None
    assert [gpu.model.key for gpu in report.gpus] == ["A100-80GB", "H100"]
    assert any("differ" in warning for warning in report.warnings)


def test_mig_mode_on_is_reported_with_a_fix():
    gpus = [FakeNvmlGpu("NVIDIA H100 80GB HBM3", "GPU-aaaa", "00000000:18:00.0", 81559, mig=True,
                        mig_slices=[("MIG-1111-2222", 40192), ("MIG-3333-4444", 19968)]),
            FakeNvmlGpu("NVIDIA H100 80GB HBM3", "GPU-bbbb", "00000000:2A:00.0", 81559)]
    report = detect(FakeNvml(gpus))
    assert [gpu.mig_enabled for gpu in report.gpus] == [True, False]
    assert report.gpus[0].model.key == "H100"
    assert any("MIG mode enabled" in warning and "-mig 0" in warning for warning in report.warnings)


def test_mig_instances_named_in_cuda_visible_devices():
    gpus = [FakeNvmlGpu("NVIDIA H100 80GB HBM3", "GPU-aaaa", "00000000:18:00.0", 81559, mig=True,
                        mig_slices=[("MIG-1111-2222", 40192), ("MIG-3333-4444", 19968)])]
    report = detect(FakeNvml(gpus), CUDA_VISIBLE_DEVICES="MIG-3333,MIG-1111-2222")
    assert [gpu.mig_instance for gpu in report.gpus] == ["MIG-3333-4444", "MIG-1111-2222"]
    assert report.gpus[0].memory_total_bytes == 19968 * MIB
    assert report.gpus[0].model.key == "H100"  # the name still identifies the part
    assert report.links[0][1] == "none" and report.all_pairs_linked is False
    assert any("one MIG instance per process" in warning for warning in report.warnings)


def test_parts_without_mig_and_without_nvlink_fall_back_to_pcie_topology():
    gpus = [FakeNvmlGpu("NVIDIA L40S", f"GPU-{i}", f"00000000:{i + 1:02X}:00.0", 46068,
                        capability=(8, 9), mig=None) for i in range(2)]
    for kwargs in ({"nvlink": []}, {"p2p_raises": True}):
        report = detect(FakeNvml(gpus, topology_level=30, **kwargs))
        assert report.links[0][1] == "phb"
        assert report.all_pairs_linked is False
        assert [gpu.mig_enabled for gpu in report.gpus] == [False, False]
        assert report.model.key == "L40S"


def test_unknown_parts_are_listed_without_a_catalog_match():
    nvml = FakeNvml([FakeNvmlGpu("NVIDIA H100 NVL", "GPU-n", "00000000:18:00.0", 95830)])
    report = detect(nvml)
    assert report.count == 1 and report.gpus[0].model is None
    assert any("not in the GPU catalog" in warning for warning in report.warnings)


def test_older_pynvml_returning_bytes_is_decoded():
    nvml = h100_box(1)
    nvml.gpus[0].name = b"NVIDIA H100 80GB HBM3"
    nvml.driver = b"535.104.05"
    report = detect(nvml)
    assert report.gpus[0].name == "NVIDIA H100 80GB HBM3" and report.driver_version == "535.104.05"


@pytest.mark.parametrize("code, words", [
    (FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
    (FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
    (FakeNvml.NVML_ERROR_NO_PERMISSION, "permission"),
    (999, "NVML failed to start"),
])
def test_nvml_init_failure_gives_an_empty_report_that_says_why(no_amdsmi, code, words):
    report = detect(FakeNvml(init_error=code))
    assert report.count == 0 and report.source == "none" and report.vendor is None
    assert any(words in warning for warning in report.warnings), report.warnings
    assert any("no GPU detected" in warning for warning in report.warnings)


def test_missing_pynvml_gives_an_empty_report(monkeypatch, no_amdsmi):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    report = detect_hardware(env={})
    assert report.count == 0 and report.all_pairs_linked is None
    assert any("nvidia-ml-py" in warning for warning in report.warnings)
    assert any("amdsmi" in warning for warning in report.warnings)


def test_an_nvml_call_failing_in_an_unforeseen_way_does_not_raise(no_amdsmi):
    nvml = h100_box(2)

    def broken():
        raise RuntimeError("boom")

    nvml.nvmlDeviceGetCount = broken
    report = detect(nvml)
    assert report.count == 0
    assert any("failed unexpectedly" in warning and "boom" in warning
               for warning in report.warnings)


def test_a_gpu_nvml_cannot_read_is_left_out_with_a_warning():
    nvml = h100_box(2)
    original = nvml.nvmlDeviceGetMemoryInfo

    def memory(handle):
        if handle == ("gpu", 1):
            raise NVMLError(15)  # GPU is lost
        return original(handle)

    nvml.nvmlDeviceGetMemoryInfo = memory
    report = detect(nvml)
    assert [gpu.physical_index for gpu in report.gpus] == [0]
    assert any("GPU 1 could not be read" in warning for warning in report.warnings)
