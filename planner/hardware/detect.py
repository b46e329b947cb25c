"""What GPUs this machine has, as an engine started here would see them.

`detect_hardware` asks NVML first and amdsmi when NVML finds nothing. It never raises for a
missing library, driver or permission: the report then holds zero GPUs and a warning saying why.
The vendor libraries are imported lazily (tests inject fakes); nothing here imports torch.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from qwen35.planner.hardware.catalog import GpuModel, match_detected

# Link kinds in a report's matrix. "nvlink"/"xgmi" are direct GPU-to-GPU fabrics; the PCIe kinds
# follow `nvidia-smi topo -m`: pix (one switch), pxb (several switches), phb (host bridge),
# node (across host bridges in one NUMA node), sys (across sockets), board (same board).
FAST_LINKS = frozenset({"nvlink", "xgmi"})
LINK_SELF = "self"
LINK_NONE = "none"  # no peer-to-peer at all (MIG instances)
LINK_UNKNOWN = "unknown"


@dataclass(frozen=True)
class DetectedGpu:
    """One GPU as an engine started with this environment sees it."""

    index: int  # the ordinal the engine sees, after *_VISIBLE_DEVICES
    physical_index: int  # NVML / amdsmi index
    vendor: str
    name: str
    uuid: str
    pci_bus_id: str
    memory_total_bytes: int
    memory_free_bytes: int | None = None
    compute_capability: tuple[int, int] | None = None
    gfx_target: str | None = None
    mig_enabled: bool = False  # current MIG mode of the physical GPU
    mig_instance: str | None = None  # MIG UUID when the visible device is one MIG slice
    model: GpuModel | None = None  # catalog match, None when the part is not in the catalog


@dataclass
class VendorScan:
    """What one vendor library reported; `unavailable` says why it could not be asked at all."""

    vendor: str
    source: str
    gpus: list[DetectedGpu] = field(default_factory=list)
    links: list[list[str]] = field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    visibility: str | None = None
    warnings: list[str] = field(default_factory=list)
    unavailable: str | None = None
    found: int = 0  # GPUs the library listed before *_VISIBLE_DEVICES filtering


@dataclass(frozen=True)
class HardwareReport:
    """The GPUs found, how they are linked, and anything the user should know about them."""

    gpus: tuple[DetectedGpu, ...]
    vendor: str | None  # "nvidia", "amd", "mixed", or None without GPUs
    source: str  # "nvml", "amdsmi", "nvml+amdsmi" or "none"
    driver_version: str | None
    cuda_driver_version: str | None
    links: tuple[tuple[str, ...], ...]  # links[i][j] between visible GPUs i and j
    all_pairs_linked: bool | None  # every pair on NVLink/XGMI; None below 2 GPUs or when unknown
    visibility: str | None  # the *_VISIBLE_DEVICES setting that filtered the GPUs
    warnings: tuple[str, ...]

    @property
    def count(self) -> int:
        """Number of visible GPUs."""
        return len(self.gpus)

    @property
    def total_memory_bytes(self) -> int:
        """Reported memory summed over the visible GPUs."""
        return sum(gpu.memory_total_bytes for gpu in self.gpus)

    @property
    def model(self) -> GpuModel | None:
        """The catalog model when every visible GPU is the same known part, else None."""
        models = {gpu.model for gpu in self.gpus}
        if len(models) != 1:
            return None
        return next(iter(models))


def summarize_links(links: list[list[str]]) -> bool | None:
    """True if every pair is on NVLink/XGMI, False if a pair is not, None if unknown or < 2 GPUs."""
    pairs = [links[i][j] for i in range(len(links)) for j in range(i + 1, len(links))]
    if not pairs:
        return None
    if all(kind in FAST_LINKS for kind in pairs):
        return True
    if any(kind not in FAST_LINKS and kind != LINK_UNKNOWN for kind in pairs):
        return False
    return None


def _import(module_name: str) -> tuple[Any | None, str | None]:
    try:
        return importlib.import_module(module_name), None
    except ImportError:
        return None, "not installed"
    except Exception as error:  # a binding whose shared library fails to load raises OSError & co
        return None, f"failed to load ({error})"


def _guarded(scan: Callable[..., VendorScan], module: Any, env: Mapping[str, str],
             vendor: str, source: str) -> VendorScan:
    """Run one vendor scan; a library misbehaving in a way we did not foresee becomes a warning."""
    try:
        return scan(module, env)
    except Exception as error:
        return VendorScan(vendor, source,
                          unavailable=f"{vendor} GPU detection failed unexpectedly: {error!r}")


_NVML_MISSING = ("NVIDIA GPUs cannot be detected: the pynvml module (package nvidia-ml-py) is "
                 "{why}; pip install nvidia-ml-py")
_AMDSMI_MISSING = ("AMD GPUs cannot be detected: the amdsmi module is {why}; install the amdsmi "
                   "Python package that ships with your ROCm (/opt/rocm/share/amd_smi)")


def detect_hardware(env: Mapping[str, str] | None = None, nvml: Any = None,
                    amdsmi: Any = None) -> HardwareReport:
    """Detect the GPUs visible to an engine started with `env` (default: this process's)."""
    # The vendor modules build DetectedGpu/VendorScan from this module, so they load after it.
    from qwen35.planner.hardware import amd, nvidia

    env = dict(os.environ if env is None else env)
    scans: list[VendorScan] = []

    nvml_module, why = (nvml, None) if nvml is not None else _import("pynvml")
    if nvml_module is None:
        scans.append(VendorScan("nvidia", "nvml", unavailable=_NVML_MISSING.format(why=why)))
    else:
        scans.append(_guarded(nvidia.scan_nvidia, nvml_module, env, "NVIDIA", "nvml"))

    # amdsmi is only worth loading when NVML found no GPU at all (or a test hands one in).
    if amdsmi is not None or not scans[0].found:
        amd_module, why = (amdsmi, None) if amdsmi is not None else _import("amdsmi")
        if amd_module is None:
            scans.append(VendorScan("amd", "amdsmi", unavailable=_AMDSMI_MISSING.format(why=why)))
        else:
            scans.append(_guarded(amd.scan_amd, amd_module, env, "AMD", "amdsmi"))
    return _merge(scans)


def _with_model(gpu: DetectedGpu, index: int) -> DetectedGpu:
    # A MIG slice reports the slice's memory, so only its name can identify the part.
    memory = None if gpu.mig_instance else gpu.memory_total_bytes
    return replace(gpu, index=index, model=match_detected(gpu.name, memory, gpu.gfx_target))


def _merge(scans: list[VendorScan]) -> HardwareReport:
    with_gpus = [scan for scan in scans if scan.gpus]
    gpus: list[DetectedGpu] = []
    for scan in with_gpus:
        gpus.extend(scan.gpus)
    gpus = [_with_model(gpu, index) for index, gpu in enumerate(gpus)]

    warnings: list[str] = []
    for scan in scans:
        warnings.extend(scan.warnings)
    if not gpus:
        warnings.extend(scan.unavailable for scan in scans if scan.unavailable)
        warnings.append("no GPU detected: plans need an explicit target such as --gpu H100:8")
    warnings.extend(_catalog_warnings(gpus))

    # One vendor's link matrix is kept as is; a mixed box has no link across vendors.
    links = [[LINK_UNKNOWN] * len(gpus) for _ in gpus]
    offset = 0
    for scan in with_gpus:
        for i, row in enumerate(scan.links):
            for j, kind in enumerate(row):
                links[offset + i][offset + j] = kind
        offset += len(scan.gpus)
    for i in range(len(gpus)):
        links[i][i] = LINK_SELF
        for j in range(len(gpus)):
            if gpus[i].vendor != gpus[j].vendor:
                links[i][j] = LINK_NONE

    vendors = sorted({scan.vendor for scan in with_gpus})
    answered = [scan.source for scan in scans if scan.unavailable is None]
    first = with_gpus[0] if with_gpus else None
    return HardwareReport(
        gpus=tuple(gpus),
        vendor=vendors[0] if len(vendors) == 1 else ("mixed" if vendors else None),
        source="+".join(answered) if answered else "none",
        driver_version=first.driver_version if first else None,
        cuda_driver_version=first.cuda_driver_version if first else None,
        links=tuple(tuple(row) for row in links),
        all_pairs_linked=summarize_links(links),
        visibility="; ".join(scan.visibility for scan in scans if scan.visibility) or None,
        warnings=tuple(warnings),
    )


def _catalog_warnings(gpus: list[DetectedGpu]) -> list[str]:
    warnings = []
    for gpu in gpus:
        if gpu.model is None:
            warnings.append(
                f"GPU {gpu.index} '{gpu.name}' ({gpu.memory_total_bytes / (1 << 30):.1f} GiB) is "
                "not in the GPU catalog: name the closest known part explicitly "
                "(e.g. --gpu H100:8)")
    # Known parts compare by catalog model: one MI300X can report several market names.
    names = sorted({gpu.model.key if gpu.model else gpu.name for gpu in gpus})
    if len(names) > 1:
        warnings.append(f"the visible GPUs differ ({', '.join(names)}): a tensor-parallel group "
                        "runs at the speed and memory of its smallest member")
    return warnings


def _gpu_to_dict(gpu: DetectedGpu) -> dict[str, Any]:
    model = gpu.model
    return {
        "index": gpu.index,
        "physical_index": gpu.physical_index,
        "vendor": gpu.vendor,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "pci_bus_id": gpu.pci_bus_id,
        "memory_total_bytes": gpu.memory_total_bytes,
        "memory_free_bytes": gpu.memory_free_bytes,
        "compute_capability": list(gpu.compute_capability) if gpu.compute_capability else None,
        "gfx_target": gpu.gfx_target,
        "mig_enabled": gpu.mig_enabled,
        "mig_instance": gpu.mig_instance,
        "catalog": None if model is None else {
            "key": model.key,
            "arch": model.arch,
            "fp8": model.fp8,
            "fp4": model.fp4,
            "guide_memory_gb": model.guide_memory_gb,
            "interconnect": model.interconnect,
        },
    }


def report_to_dict(report: HardwareReport) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    return {
        "gpu_count": report.count,
        "vendor": report.vendor,
        "source": report.source,
        "driver_version": report.driver_version,
        "cuda_driver_version": report.cuda_driver_version,
        "visibility": report.visibility,
        "total_memory_bytes": report.total_memory_bytes,
        "catalog_model": report.model.key if report.model else None,
        "gpus": [_gpu_to_dict(gpu) for gpu in report.gpus],
        "links": [list(row) for row in report.links],
        "all_pairs_linked": report.all_pairs_linked,
        "warnings": list(report.warnings),
    }
