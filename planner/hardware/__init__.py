"""Hardware: the GPU catalog and detection of the GPUs on this machine (no torch here)."""
from qwen35.planner.hardware.catalog import (GPU_MODELS, GpuModel, lookup_gpu, match_detected,
                                             parse_gpu_target)
from qwen35.planner.hardware.detect import (DetectedGpu, HardwareReport, detect_hardware,
                                            report_to_dict)

__all__ = [
    "GPU_MODELS",
    "DetectedGpu",
    "GpuModel",
    "HardwareReport",
    "detect_hardware",
    "lookup_gpu",
    "match_detected",
    "parse_gpu_target",
    "report_to_dict",
]
