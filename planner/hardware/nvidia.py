"""NVIDIA GPUs through NVML (`pynvml`, from nvidia-ml-py), filtered as CUDA would filter them.

NVML lists every GPU in PCI bus order and ignores CUDA_VISIBLE_DEVICES, so the filtering is
redone here with CUDA's rules: entries are indices, GPU UUIDs (whole or a unique prefix such as
"GPU-8932f937"), MIG UUIDs, or (not in CUDA's documentation, but written by some schedulers) PCI
bus ids; the first entry that names nothing hides itself and every entry after it.

Plain indices are read in NVML (PCI bus) order. CUDA's default order is fastest-first, which is the
same order when the GPUs are all one model or when CUDA_DEVICE_ORDER=PCI_BUS_ID; when neither
holds we say so in a warning.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from qwen35.planner.hardware.detect import LINK_NONE, LINK_UNKNOWN, DetectedGpu, VendorScan
from qwen35.planner.hardware.vendor_library import VendorLibrary

# NVML constants, with the values nvidia-ml-py defines, for fakes that omit them.
_ERROR_NO_PERMISSION = 4
_ERROR_DRIVER_NOT_LOADED = 9
_ERROR_LIBRARY_NOT_FOUND = 12
_P2P_CAPS_INDEX_NVLINK = 2
_P2P_STATUS_OK = 0
_MIG_ENABLE = 1
# nvmlDeviceGetTopologyCommonAncestor levels, named as `nvidia-smi topo -m` names them.
_TOPOLOGY_KINDS = {0: "board", 10: "pix", 20: "pxb", 30: "phb", 40: "node", 50: "sys"}

_PCI_BUS_ID = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{1,8}):)?(?P<bus>[0-9a-f]{1,2}):(?P<device>[0-9a-f]{1,2})"
    r"\.(?P<fn>[0-7])$",
    re.IGNORECASE)


@dataclass(frozen=True)
class _MigSlice:
    uuid: str
    memory_total: int
    memory_free: int | None


@dataclass(frozen=True)
class _Physical:
    index: int
    handle: Any
    name: str
    uuid: str
    pci_bus_id: str
    memory_total: int
    memory_free: int | None
    compute_capability: tuple[int, int] | None
    mig_enabled: bool
    mig_slices: tuple[_MigSlice, ...]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pci_bus_key(text: str) -> tuple[int, int, int, int] | None:
    """(domain, bus, device, function) of "00000000:18:00.0" / "18:00.0"; None if not a bus id."""
    match = _PCI_BUS_ID.match(text.strip())
    if match is None:
        return None
    return (int(match["domain"] or "0", 16), int(match["bus"], 16), int(match["device"], 16),
            int(match["fn"], 16))


class _Nvml(VendorLibrary):
    """The injected pynvml module plus its error type and constants."""

    def __init__(self, module: Any):
        super().__init__(module, "NVMLError")

    def const(self, name: str, default: int) -> int:
        value = getattr(self.module, name, default)
        return value if isinstance(value, int) else default



def _init_failure(nvml: _Nvml, error: Exception) -> str:
    code = getattr(error, "value", None)
    if code == nvml.const("NVML_ERROR_LIBRARY_NOT_FOUND", _ERROR_LIBRARY_NOT_FOUND):
        return ("NVIDIA GPUs cannot be detected: the NVML library (libnvidia-ml.so.1) was not "
                "found, so no NVIDIA driver is installed here")
    if code == nvml.const("NVML_ERROR_DRIVER_NOT_LOADED", _ERROR_DRIVER_NOT_LOADED):
        return ("NVIDIA GPUs cannot be detected: the NVIDIA kernel driver is not loaded; "
                "check `nvidia-smi`")
    if code == nvml.const("NVML_ERROR_NO_PERMISSION", _ERROR_NO_PERMISSION):
        return ("NVIDIA GPUs cannot be detected: no permission to open the GPUs; check access to "
                "/dev/nvidia* (in a container, run it with --gpus all)")
    return f"NVIDIA GPUs cannot be detected: NVML failed to start ({error})"


def _mig_slices(nvml: _Nvml, handle: Any) -> tuple[_MigSlice, ...]:
    slices = []
    for slot in range(nvml.call("nvmlDeviceGetMaxMigDeviceCount", handle, default=0) or 0):
        mig = nvml.call("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if mig is None:  # empty slots raise NOT_FOUND
            continue
        uuid = nvml.call("nvmlDeviceGetUUID", mig)
        memory = nvml.call("nvmlDeviceGetMemoryInfo", mig)
        if uuid is not None and memory is not None:
            slices.append(_MigSlice(_text(uuid), int(memory.total), int(memory.free)))
    return tuple(slices)


def _read_device(nvml: _Nvml, index: int, warnings: list[str]) -> _Physical | None:
    handle = nvml.call("nvmlDeviceGetHandleByIndex", index)
    name = nvml.call("nvmlDeviceGetName", handle) if handle is not None else None
    uuid = nvml.call("nvmlDeviceGetUUID", handle) if handle is not None else None
    memory = nvml.call("nvmlDeviceGetMemoryInfo", handle) if handle is not None else None
    if name is None or uuid is None or memory is None:
        warnings.append(f"NVIDIA GPU {index} could not be read through NVML and is left out")
        return None
    pci = nvml.call("nvmlDeviceGetPciInfo", handle)
    capability = nvml.call("nvmlDeviceGetCudaComputeCapability", handle)
    mig_mode = nvml.call("nvmlDeviceGetMigMode", handle)  # [current, pending]; errors: no MIG
    mig_on = nvml.const("NVML_DEVICE_MIG_ENABLE", _MIG_ENABLE)
    mig_enabled = bool(mig_mode) and mig_mode[0] == mig_on
    return _Physical(
        index=index, handle=handle, name=_text(name), uuid=_text(uuid),
        pci_bus_id=_text(pci.busId) if pci is not None else "",
        memory_total=int(memory.total), memory_free=int(memory.free),
        compute_capability=tuple(capability) if capability else None,
        mig_enabled=mig_enabled, mig_slices=_mig_slices(nvml, handle) if mig_enabled else (),
    )


def _match_entry(entry: str, devices: list[_Physical]) -> tuple[int, str | None] | str:
    """(position in devices, MIG UUID or None) for one CUDA_VISIBLE_DEVICES entry, or why not."""
    lowered = entry.lower()
    if re.fullmatch(r"-?\d+", entry):
        number = int(entry)
        if 0 <= number < len(devices):
            return number, None
        return f"is not a GPU index (0..{len(devices) - 1})"
    if lowered.startswith("mig-gpu-"):  # pre-R470 form MIG-GPU-<uuid>/<gi>/<ci>
        parent = lowered[4:].split("/", 1)[0]
        hits = [i for i, device in enumerate(devices) if device.uuid.lower().startswith(parent)]
        return (hits[0], entry) if len(hits) == 1 else "names no single GPU"
    if lowered.startswith("mig-"):
        hits = [(i, mig.uuid) for i, device in enumerate(devices) for mig in device.mig_slices
                if mig.uuid.lower().startswith(lowered)]
        if len(hits) == 1:
            return hits[0]
        return "matches several MIG UUIDs" if hits else "matches no MIG instance"
    if lowered.startswith("gpu-"):
        hits = [i for i, device in enumerate(devices) if device.uuid.lower().startswith(lowered)]
        if len(hits) == 1:
            return hits[0], None
        return "matches several GPU UUIDs" if hits else "matches no GPU UUID"
    bus = pci_bus_key(entry)
    if bus is not None:
        hits = [i for i, device in enumerate(devices) if pci_bus_key(device.pci_bus_id) == bus]
        return (hits[0], None) if hits else "matches no GPU's PCI bus id"
    return "is neither a GPU index, a UUID nor a PCI bus id"


def _resolve_visible(value: str | None, devices: list[_Physical], device_order: str | None,
                     warnings: list[str]) -> list[tuple[int, str | None]]:
    """The (device position, MIG UUID) pairs CUDA exposes under CUDA_VISIBLE_DEVICES=value."""
    mixed = len({device.name for device in devices}) > 1
    pci_order = (device_order or "").upper() == "PCI_BUS_ID"
    if value is None:
        if mixed and not pci_order:
            warnings.append("GPUs are listed in PCI bus order, but CUDA numbers mixed GPUs fastest "
                            "first: set CUDA_DEVICE_ORDER=PCI_BUS_ID so the numbers agree")
        return [(i, None) for i in range(len(devices))]
    if not value.strip():
        warnings.append("CUDA_VISIBLE_DEVICES is set but empty: CUDA sees no GPU")
        return []
    chosen: list[tuple[int, str | None]] = []
    entries = [entry.strip() for entry in value.split(",")]
    for position, entry in enumerate(entries):
        found = _match_entry(entry, devices)
        if not isinstance(found, str) and found in chosen:
            found = "repeats an earlier entry"
        if isinstance(found, str):
            hidden = entries[position + 1:]
            also = f" and the entries after it ({', '.join(hidden)})" if hidden else ""
            warnings.append(f"CUDA_VISIBLE_DEVICES entry '{entry}' {found}: CUDA ignores it{also}")
            break
        if pci_bus_key(entry) is not None:
            warnings.append(f"CUDA_VISIBLE_DEVICES entry '{entry}' is a PCI bus id; CUDA documents "
                            "only indices and UUIDs there, so prefer the GPU's UUID")
        chosen.append(found)
    if mixed and not pci_order and any(re.fullmatch(r"\d+", entry) for entry in entries):
        warnings.append("CUDA_VISIBLE_DEVICES uses plain indices on mixed GPUs: CUDA numbers them "
                        "fastest first, not in the PCI bus order used here; set "
                        "CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs")
    if sum(1 for _, mig in chosen if mig) > 1:
        warnings.append("CUDA enumerates only one MIG instance per process: the other MIG "
                        "instances in CUDA_VISIBLE_DEVICES will not be usable together")
    return chosen


def _link_kind(nvml: _Nvml, first: Any, second: Any) -> str:
    nvlink = nvml.const("NVML_P2P_CAPS_INDEX_NVLINK", _P2P_CAPS_INDEX_NVLINK)
    status = nvml.call("nvmlDeviceGetP2PStatus", first, second, nvlink)
    if status == nvml.const("NVML_P2P_STATUS_OK", _P2P_STATUS_OK):
        return "nvlink"
    level = nvml.call("nvmlDeviceGetTopologyCommonAncestor", first, second)
    return _TOPOLOGY_KINDS.get(level, LINK_UNKNOWN)


def _cuda_version(number: int | None) -> str | None:
    # NVML encodes CUDA 12.4 as 12040.
    return None if not number else f"{number // 1000}.{number % 1000 // 10}"


def scan_nvidia(module: Any, env: Mapping[str, str]) -> VendorScan:
    """Ask NVML for the GPUs, their links and the driver, filtered by CUDA_VISIBLE_DEVICES."""
    nvml = _Nvml(module)
    scan = VendorScan("nvidia", "nvml")
    try:
        module.nvmlInit()
    except nvml.error as error:
        scan.unavailable = _init_failure(nvml, error)
        return scan
    try:
        count = nvml.call("nvmlDeviceGetCount")
        if count is None:
            scan.unavailable = "NVIDIA GPUs cannot be detected: NVML could not count the GPUs"
            return scan
        devices = []
        for index in range(count):
            device = _read_device(nvml, index, scan.warnings)
            if device is not None:
                devices.append(device)
        scan.found = len(devices)
        driver = nvml.call("nvmlSystemGetDriverVersion")
        scan.driver_version = _text(driver) if driver else None
        scan.cuda_driver_version = _cuda_version(nvml.call("nvmlSystemGetCudaDriverVersion"))
        value = env.get("CUDA_VISIBLE_DEVICES")
        if value is not None:
            scan.visibility = f"CUDA_VISIBLE_DEVICES={value}"
        visible = _resolve_visible(value, devices, env.get("CUDA_DEVICE_ORDER"), scan.warnings)
        for index, (position, mig_uuid) in enumerate(visible):
            scan.gpus.append(_to_detected(devices[position], index, mig_uuid, scan.warnings))
        scan.links = _links(nvml, [devices[position] for position, _ in visible],
                            [mig for _, mig in visible])
    finally:
        nvml.call("nvmlShutdown")
    return scan


def _to_detected(device: _Physical, index: int, mig_uuid: str | None,
                 warnings: list[str]) -> DetectedGpu:
    total, free = device.memory_total, device.memory_free
    if mig_uuid:
        slice_ = next((mig for mig in device.mig_slices if mig.uuid == mig_uuid), None)
        if slice_ is None:
            warnings.append(f"MIG instance '{mig_uuid}' could not be sized; the whole GPU's memory "
                            "is reported")
        else:
            total, free = slice_.memory_total, slice_.memory_free
    elif device.mig_enabled:
        warnings.append(
            f"GPU {device.index} ({device.name}) has MIG mode enabled: CUDA cannot use it as one "
            f"GPU; disable MIG (sudo nvidia-smi -i {device.index} -mig 0) or name a MIG instance "
            "in CUDA_VISIBLE_DEVICES")
    return DetectedGpu(
        index=index, physical_index=device.index, vendor="nvidia", name=device.name,
        uuid=device.uuid, pci_bus_id=device.pci_bus_id, memory_total_bytes=total,
        memory_free_bytes=free, compute_capability=device.compute_capability,
        mig_enabled=device.mig_enabled, mig_instance=mig_uuid)


def _links(nvml: _Nvml, devices: list[_Physical], migs: list[str | None]) -> list[list[str]]:
    links = [[LINK_UNKNOWN] * len(devices) for _ in devices]
    for i in range(len(devices)):
        for j in range(i + 1, len(devices)):
            if migs[i] or migs[j] or devices[i].index == devices[j].index:
                kind = LINK_NONE  # MIG instances have no peer-to-peer
            else:
                kind = _link_kind(nvml, devices[i].handle, devices[j].handle)
            links[i][j] = links[j][i] = kind
    return links
