"""`qwen35 hardware` as a user runs it, its table, and the planner's import staying torch-free."""
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from qwen35.launcher.commands import hardware as hardware_command
from qwen35.planner.hardware import lookup_gpu
from qwen35.planner.hardware.detect import DetectedGpu, HardwareReport

QWEN35 = str(Path(sys.executable).parent / "qwen35")
# Hide every GPU from every vendor, so the answer is the same on any machine.
NO_GPUS = {"CUDA_VISIBLE_DEVICES": "", "ROCR_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}


def run(*args, **env):
    return subprocess.run([QWEN35, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_json_with_every_gpu_hidden_is_valid_and_empty():
    done = run("hardware", "--json", **NO_GPUS)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # warnings went to stderr, so stdout is pure JSON
    assert data["gpu_count"] == 0 and data["gpus"] == [] and data["links"] == []
    assert "warning:" in done.stderr


def test_json_on_this_machine():
    done = run("hardware", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["gpu_count"] == len(data["gpus"])
    assert all(gpu["memory_total_bytes"] > 0 for gpu in data["gpus"])


def test_table_and_help():
    done = run("hardware", **NO_GPUS)
    assert done.returncode == 0 and done.stdout.startswith("0 GPUs")
    done = run("hardware", "--help")
    assert done.returncode == 0
    assert "Examples" in done.stdout and "qwen35 hardware --json" in done.stdout


def test_table_shows_gpus_and_links(monkeypatch):
    h100 = lookup_gpu("H100")
    gpus = tuple(DetectedGpu(index=i, physical_index=i, vendor="nvidia",
                             name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{i}",
                             pci_bus_id=f"00000000:{i + 1:02X}:00.0",
                             memory_total_bytes=h100.memory_bytes, memory_free_bytes=None,
                             compute_capability=(9, 0), model=h100) for i in range(2))
    report = HardwareReport(gpus=gpus, vendor="nvidia", source="nvml", driver_version="570.1",
                            cuda_driver_version="12.8",
                            links=(("self", "nvlink"), ("nvlink", "self")), all_pairs_linked=True,
                            visibility=None, warnings=("a warning",))
    monkeypatch.setattr("qwen35.planner.hardware.detect_hardware", lambda: report)
    app = typer.Typer()
    hardware_command.register(app)
    app.command("other")(lambda: None)  # keep `hardware` a subcommand
    result = CliRunner().invoke(app, ["hardware"])
    assert result.exit_code == 0, result.output
    assert "2 GPUs, source: nvml, driver 570.1, CUDA 12.8" in result.stdout
    assert "sm90" in result.stdout and "79.6" in result.stdout and "NV" in result.stdout
    assert "every pair on NVLink/XGMI" in result.stdout
    assert "warning: a warning" in result.stderr


def test_importing_the_hardware_package_pulls_in_neither_torch_nor_gpu_libraries():
    command = [sys.executable, "-X", "importtime", "-c", "import qwen35.planner.hardware"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "qwen35" in modules
    assert not modules & {"torch", "pynvml", "amdsmi", "numpy"}
