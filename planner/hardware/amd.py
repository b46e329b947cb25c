"""AMD GPUs through amdsmi (the ROCm SMI Python package), filtered as ROCm would filter them.

ROCR_VISIBLE_DEVICES is applied first (indices into the full list, or UUIDs such as
"GPU-4b2c1a9f8d3e6f7a"); HIP_VISIBLE_DEVICES (or CUDA_VISIBLE_DEVICES, which HIP also reads) then
picks indices or UUIDs out of what is left. As with CUDA, the first entry that names nothing hides
itself and everything after it. We assume amdsmi lists GPUs in the order ROCm numbers them
(both follow the KFD topology, normally PCI bus order); UUIDs avoid the question entirely.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from qwen35.planner.hardware.catalog import normalize_gfx_target
from qwen35.planner.hardware.detect import LINK_UNKNOWN, DetectedGpu, VendorScan
from qwen35.planner.hardware.vendor_library import VendorLibrary


@dataclass(frozen=True)
class _Device:
    index: int
    handle: Any
    name: str
    uuid: str
    hip_uuid: str
    bdf: str
    memory_total: int
    memory_free: int | None
    gfx_target: str | None


class _Smi(VendorLibrary):
    """The injected amdsmi module plus its error type."""

    def __init__(self, module: Any):
        super().__init__(module, "AmdSmiException")


def _hex_id(text: str) -> str:
    """UUID digits only, without a "GPU-" prefix: "GPU-4B2C-1a" -> "4b2c1a"."""
    text = text.strip().lower()
    if text.startswith("gpu-"):
        text = text[4:]
    return re.sub(r"[^0-9a-f]", "", text)


def _market_name(asic: Mapping[str, Any]) -> str:
    # Some amdsmi releases report "N/A" or the bare PCI device id ("0x74a1") as the market name.
    name = str(asic.get("market_name") or "").strip()
    return "" if name.upper() in ("N/A", "NA") or re.fullmatch(r"0x[0-9a-fA-F]+", name) else name


def _read_device(smi: _Smi, index: int, handle: Any, warnings: list[str]) -> _Device | None:
    vram = getattr(getattr(smi.module, "AmdSmiMemoryType", None), "VRAM", None)
    total = smi.call("amdsmi_get_gpu_memory_total", handle, vram)
    if total is None:
        warnings.append(f"AMD GPU {index}: amdsmi could not read its memory; it is left out")
        return None
    used = smi.call("amdsmi_get_gpu_memory_usage", handle, vram)
    asic = smi.call("amdsmi_get_gpu_asic_info", handle, default={}) or {}
    gfx = normalize_gfx_target(asic.get("target_graphics_version"))
    enumeration = smi.call("amdsmi_get_gpu_enumeration_info", handle, default={}) or {}
    name = _market_name(asic) or f"AMD GPU ({gfx or asic.get('device_id') or 'unknown'})"
    return _Device(
        index=index, handle=handle, name=name,
        uuid=str(smi.call("amdsmi_get_gpu_device_uuid", handle, default="") or ""),
        hip_uuid=str(enumeration.get("hip_uuid") or ""),
        bdf=str(smi.call("amdsmi_get_gpu_device_bdf", handle, default="") or ""),
        memory_total=int(total), memory_free=int(total) - int(used) if used is not None else None,
        gfx_target=gfx,
    )


def _match_entry(entry: str, devices: list[_Device]) -> int | str:
    """Position in devices for one *_VISIBLE_DEVICES entry, or why it names nothing."""
    if re.fullmatch(r"-?\d+", entry):
        number = int(entry)
        if 0 <= number < len(devices):
            return number
        return f"is not a GPU index (0..{len(devices) - 1})"
    wanted = _hex_id(entry)
    if not wanted or (not entry.lower().startswith("gpu-") and "-" not in entry):
        return "is neither a GPU index nor a UUID"
    hits = [i for i, device in enumerate(devices)
            if any(known and known.startswith(wanted)
                   for known in (_hex_id(device.uuid), _hex_id(device.hip_uuid)))]
    if len(hits) == 1:
        return hits[0]
    return "matches several GPU UUIDs" if hits else "matches no GPU UUID"


def _select(variable: str, value: str | None, devices: list[_Device],
            warnings: list[str]) -> list[_Device]:
    if value is None:
        return devices
    if not value.strip():
        warnings.append(f"{variable} is set but empty: ROCm sees no GPU")
        return []
    chosen: list[_Device] = []
    entries = [entry.strip() for entry in value.split(",")]
    for position, entry in enumerate(entries):
        found = _match_entry(entry, devices)
        if isinstance(found, int) and devices[found] in chosen:
            found = "repeats an earlier entry"
        if isinstance(found, str):
            hidden = entries[position + 1:]
            also = f" and the entries after it ({', '.join(hidden)})" if hidden else ""
            warnings.append(f"{variable} entry '{entry}' {found}: ROCm ignores it{also}")
            break
        chosen.append(devices[found])
    return chosen


def _link_types(module: Any) -> tuple[int | None, int | None]:
    """(XGMI, PCIe) values of amdsmi_topo_get_link_type's "type"; ROCm 6.x renamed the enum."""
    for enum_name, xgmi, pcie in (
            ("AmdSmiLinkType", "AMDSMI_LINK_TYPE_XGMI", "AMDSMI_LINK_TYPE_PCIE"),
            ("AmdSmiIoLinkType", "XGMI", "PCIEXPRESS")):
        enum = getattr(module, enum_name, None)
        if enum is not None and hasattr(enum, xgmi):
            pcie_value = getattr(enum, pcie, None)
            return int(getattr(enum, xgmi)), None if pcie_value is None else int(pcie_value)
    return None, None


def _links(smi: _Smi, devices: list[_Device]) -> list[list[str]]:
    xgmi, pcie = _link_types(smi.module)
    links = [[LINK_UNKNOWN] * len(devices) for _ in devices]
    for i in range(len(devices)):
        for j in range(i + 1, len(devices)):
            result = smi.call("amdsmi_topo_get_link_type", devices[i].handle, devices[j].handle)
            kind = result.get("type") if isinstance(result, Mapping) else None
            if kind is not None and kind == xgmi:
                links[i][j] = links[j][i] = "xgmi"
            elif kind is not None and kind == pcie:
                links[i][j] = links[j][i] = "pcie"
    return links


def scan_amd(module: Any, env: Mapping[str, str]) -> VendorScan:
    """Ask amdsmi for the GPUs, their links and the driver, filtered by the ROCm visibility vars."""
    smi = _Smi(module)
    scan = VendorScan("amd", "amdsmi")
    try:
        module.amdsmi_init()
    except smi.error as error:
        scan.unavailable = (f"AMD GPUs cannot be detected: amdsmi failed to start ({error}); "
                            "check that the amdgpu driver is loaded and /dev/kfd is accessible")
        return scan
    try:
        handles = smi.call("amdsmi_get_processor_handles")
        if handles is None:
            scan.unavailable = "AMD GPUs cannot be detected: amdsmi could not list the GPUs"
            return scan
        devices = []
        for index, handle in enumerate(handles):
            device = _read_device(smi, index, handle, scan.warnings)
            if device is not None:
                devices.append(device)
        scan.found = len(devices)
        if devices:
            driver = smi.call("amdsmi_get_gpu_driver_info", devices[0].handle, default={}) or {}
            scan.driver_version = str(driver.get("driver_version") or "") or None
        hip_variable = "HIP_VISIBLE_DEVICES"
        if env.get(hip_variable) is None and env.get("CUDA_VISIBLE_DEVICES") is not None:
            hip_variable = "CUDA_VISIBLE_DEVICES"
        settings = [(name, env.get(name)) for name in ("ROCR_VISIBLE_DEVICES", hip_variable)]
        for variable, value in settings:
            devices = _select(variable, value, devices, scan.warnings)
        scan.visibility = "; ".join(f"{name}={value}" for name, value in settings
                                    if value is not None) or None
        scan.gpus = [
            DetectedGpu(index=index, physical_index=device.index, vendor="amd", name=device.name,
                        uuid=device.uuid or device.hip_uuid, pci_bus_id=device.bdf,
                        memory_total_bytes=device.memory_total,
                        memory_free_bytes=device.memory_free, gfx_target=device.gfx_target)
            for index, device in enumerate(devices)
        ]
        scan.links = _links(smi, devices)
    finally:
        smi.call("amdsmi_shut_down")
    return scan
