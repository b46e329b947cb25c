"""The merged report: JSON shape, link summary, and the GPU-free machine."""
import json
import sys

from hardware_fakes import FakeNvml, h100_box, mi300x_box

from qwen35.planner.hardware import detect_hardware, report_to_dict
from qwen35.planner.hardware.detect import summarize_links


def test_report_to_dict_is_json_ready():
    data = report_to_dict(detect_hardware(env={"CUDA_VISIBLE_DEVICES": "1,0"}, nvml=h100_box(2)))
    assert json.loads(json.dumps(data)) == data
    assert data["gpu_count"] == 2 and data["catalog_model"] == "H100"
    assert data["visibility"] == "CUDA_VISIBLE_DEVICES=1,0"
    first = data["gpus"][0]
    assert first["physical_index"] == 1 and first["compute_capability"] == [9, 0]
    assert first["catalog"] == {"key": "H100", "arch": "sm90", "fp8": True, "fp4": None,
                                "guide_memory_gb": 80, "interconnect": "NVLink 4"}
    assert data["links"] == [["self", "nvlink"], ["nvlink", "self"]]
    assert data["all_pairs_linked"] is True and data["warnings"] == []


def test_summarize_links():
    assert summarize_links([]) is None
    assert summarize_links([["self"]]) is None
    assert summarize_links([["self", "xgmi"], ["xgmi", "self"]]) is True
    assert summarize_links([["self", "sys"], ["sys", "self"]]) is False
    assert summarize_links([["self", "unknown"], ["unknown", "self"]]) is None


def test_amd_is_not_asked_once_nvidia_answered(monkeypatch):
    def fail_import(*args, **kwargs):
        raise AssertionError("amdsmi should not be imported")

    monkeypatch.setattr("qwen35.planner.hardware.detect.importlib.import_module", fail_import)
    report = detect_hardware(env={}, nvml=h100_box(1))
    assert report.count == 1 and report.source == "nvml"


def test_a_box_with_both_vendors_numbers_them_in_turn():
    report = detect_hardware(env={}, nvml=h100_box(2), amdsmi=mi300x_box())
    assert report.vendor == "mixed" and report.count == 10
    assert report.source == "nvml+amdsmi"
    assert [gpu.index for gpu in report.gpus] == list(range(10))
    assert report.links[0][1] == "nvlink" and report.links[1][2] == "none"
    assert report.links[2][3] == "xgmi"
    assert report.all_pairs_linked is False


def test_nvml_with_no_gpus_then_amd(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    report = detect_hardware(env={}, nvml=FakeNvml([]))
    assert report.count == 0 and report.source == "nvml"
    assert any("no GPU detected" in warning for warning in report.warnings)
