"""The machine a benchmark ran on, a median timer, and the measured copy bandwidth (the byte ceiling)."""
from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine_info(device: torch.device) -> dict:
    """GPU (or CPU), driver, torch, CUDA and Triton versions."""
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, sms=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda, driver=_driver_version())
    return info


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # noqa: BLE001 - the header just leaves it out
        return None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1,
            setup: Callable[[], object] | None = None) -> float:
    """Median wall milliseconds of fn (device synchronised around each run); setup runs untimed before each."""
    samples = []
    for index in range(warmup + repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if index >= warmup:
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written (median of runs)."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 64 << 20)
    src = torch.randn(nbytes // 4, device=device)  # random data: zeros can run faster than real data
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, repeats=10 if device.type == "cuda" else 3, warmup=2)
    return 2 * nbytes / ms / 1e6


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes allocated on the GPU since the last reset (CUDA), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if os.uname().sysname == "Darwin" else 1024)
    except ImportError:
        return None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device.type == "cuda":
        gc.collect()  # a model just dropped may sit in a reference cycle: free it before emptying the cache
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
