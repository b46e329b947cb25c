"""Stand-ins for the pynvml and amdsmi modules, shaped like the real bindings' calls and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

MIB = 1 << 20


# ----------------------------------------------------------------------------- NVML
class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in `.value`."""

    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeNvmlGpu:
    name: str
    uuid: str
    bus_id: str
    total_mib: int
    free_mib: int | None = None
    capability: tuple[int, int] = (9, 0)
    mig: bool | None = False  # None: the part has no MIG (GetMigMode raises NOT_SUPPORTED)
    mig_slices: list[tuple[str, int]] = field(default_factory=list)  # (MIG UUID, MiB)


class FakeNvml:
    """A pynvml module for a made-up machine. `nvlink` lists connected index pairs (or "all")."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_P2P_CAPS_INDEX_NVLINK = 2
    NVML_P2P_STATUS_OK = 0
    NVML_P2P_STATUS_NOT_SUPPORTED = 5
    NVML_DEVICE_MIG_ENABLE = 1
    NVMLError = NVMLError

    def __init__(self, gpus=(), *, nvlink="all", init_error: int | None = None,
                 p2p_raises=False, topology_level=50, driver="570.124.06", cuda=12080):
        self.gpus = list(gpus)
        self.nvlink = nvlink
        self.init_error = init_error
        self.p2p_raises = p2p_raises
        self.topology_level = topology_level
        self.driver = driver
        self.cuda = cuda
        self.calls: list[str] = []

    def _gpu(self, handle) -> FakeNvmlGpu:
        return self.gpus[handle[1]]

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2)
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle):
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle):
        if handle[0] == "mig":
            return self._gpu(handle).mig_slices[handle[2]][0]
        return self._gpu(handle).uuid

    def nvmlDeviceGetPciInfo(self, handle):
        return SimpleNamespace(busId=self._gpu(handle).bus_id, busIdLegacy=self._gpu(handle).bus_id)

    def nvmlDeviceGetMemoryInfo(self, handle):
        gpu = self._gpu(handle)
        total = gpu.mig_slices[handle[2]][1] if handle[0] == "mig" else gpu.total_mib
        free = total if gpu.free_mib is None or handle[0] == "mig" else gpu.free_mib
        return SimpleNamespace(total=total * MIB, free=free * MIB, used=(total - free) * MIB)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return self._gpu(handle).capability

    def nvmlDeviceGetMigMode(self, handle):
        gpu = self._gpu(handle)
        if gpu.mig is None:
            raise NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return [int(gpu.mig), int(gpu.mig)]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, slot):
        if slot >= len(self._gpu(handle).mig_slices):
            raise NVMLError(self.NVML_ERROR_NOT_FOUND)
        return ("mig", handle[1], slot)

    def nvmlDeviceGetP2PStatus(self, first, second, index):
        self.calls.append(f"p2p {first[1]} {second[1]} {index}")
        if self.p2p_raises:
            raise NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        pair = {first[1], second[1]}
        connected = self.nvlink == "all" or any(pair == set(p) for p in self.nvlink)
        if index == self.NVML_P2P_CAPS_INDEX_NVLINK and connected:
            return self.NVML_P2P_STATUS_OK
        return self.NVML_P2P_STATUS_NOT_SUPPORTED

    def nvmlDeviceGetTopologyCommonAncestor(self, first, second):
        return self.topology_level


def h100_box(count=8, **kwargs) -> FakeNvml:
    """An HGX H100 node: `count` H100 SXM5 GPUs on NVSwitch."""
    buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"]
    gpus = [FakeNvmlGpu("NVIDIA H100 80GB HBM3",
                        f"GPU-{i}{i}{i}{i}aaaa-0000-1111-2222-33334444555{i}",
                        f"00000000:{buses[i].upper()}:00.0", 81559, free_mib=81000)
            for i in range(count)]
    return FakeNvml(gpus, **kwargs)


# ----------------------------------------------------------------------------- amdsmi
class AmdSmiException(Exception):
    """Like amdsmi.AmdSmiException."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int):
        super().__init__(f"amdsmi error {err_code}")
        self.err_code = err_code


@dataclass
class FakeAmdGpu:
    market_name: str
    uuid: str
    bdf: str
    total_mib: int
    gfx: object = "gfx942"  # str, or the raw integer (0x942) older bindings return
    hip_uuid: str = ""
    used_mib: int = 283


class FakeAmdSmi:
    """An amdsmi module for a made-up machine; XGMI links every pair unless `xgmi=False`."""

    AmdSmiException = AmdSmiException
    AmdSmiMemoryType = SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)
    # The ROCm 6.x enum; `old_enum=True` swaps in the ROCm 5.x AmdSmiIoLinkType instead.
    AmdSmiLinkType = SimpleNamespace(AMDSMI_LINK_TYPE_INTERNAL=0, AMDSMI_LINK_TYPE_XGMI=1,
                                     AMDSMI_LINK_TYPE_PCIE=2, AMDSMI_LINK_TYPE_NOT_APPLICABLE=3,
                                     AMDSMI_LINK_TYPE_UNKNOWN=4)

    def __init__(self, gpus=(), *, xgmi=True, init_error=False, old_enum=False):
        self.gpus = list(gpus)
        self.xgmi = xgmi
        self.init_error = init_error
        self.calls: list[str] = []
        if old_enum:
            self.AmdSmiLinkType = None
            self.AmdSmiIoLinkType = SimpleNamespace(UNDEFINED=0, PCIEXPRESS=1, XGMI=2)
        self._xgmi_value = 2 if old_enum else 1
        self._pcie_value = 1 if old_enum else 2

    def amdsmi_init(self, flags=None):
        self.calls.append("init")
        if self.init_error:
            raise AmdSmiLibraryException(8)

    def amdsmi_shut_down(self):
        self.calls.append("shutdown")

    def amdsmi_get_processor_handles(self):
        return [("amd", i) for i in range(len(self.gpus))]

    def amdsmi_get_gpu_asic_info(self, handle):
        gpu = self.gpus[handle[1]]
        return {"market_name": gpu.market_name, "vendor_id": "0x1002", "device_id": "0x74a1",
                "target_graphics_version": gpu.gfx, "num_compute_units": 304}

    def amdsmi_get_gpu_memory_total(self, handle, memory_type):
        assert memory_type == self.AmdSmiMemoryType.VRAM
        return self.gpus[handle[1]].total_mib * MIB

    def amdsmi_get_gpu_memory_usage(self, handle, memory_type):
        return self.gpus[handle[1]].used_mib * MIB

    def amdsmi_get_gpu_device_uuid(self, handle):
        return self.gpus[handle[1]].uuid

    def amdsmi_get_gpu_device_bdf(self, handle):
        return self.gpus[handle[1]].bdf

    def amdsmi_get_gpu_enumeration_info(self, handle):
        gpu = self.gpus[handle[1]]
        if not gpu.hip_uuid:
            raise AmdSmiLibraryException(2)  # older ROCm: not supported
        return {"drm_render": 128 + handle[1], "drm_card": handle[1], "hsa_id": handle[1],
                "hip_id": handle[1], "hip_uuid": gpu.hip_uuid}

    def amdsmi_get_gpu_driver_info(self, handle):
        return {"driver_name": "amdgpu", "driver_version": "6.10.5", "driver_date": "2025/01/01"}

    def amdsmi_topo_get_link_type(self, first, second):
        return {"hops": 1, "type": self._xgmi_value if self.xgmi else self._pcie_value}


def mi300x_box(names=None, **kwargs) -> FakeAmdSmi:
    """An 8x MI300X node; `names` overrides the market name each GPU reports."""
    names = names or ["AMD Instinct MI300X"] * 8
    gpus = [FakeAmdGpu(name, f"{i}{i}ff74a1-0000-1000-80b4-0000000000{i}{i}",
                       f"0000:{0x05 + 0x20 * i:02x}:00.0", 196592,
                       hip_uuid=f"GPU-{i}{i}c3a4c3b2c7d2{i}{i}")
            for i, name in enumerate(names)]
    return FakeAmdSmi(gpus, **kwargs)


def no_nvidia_driver() -> FakeNvml:
    """pynvml installed, but no NVIDIA driver: nvmlInit fails with LIBRARY_NOT_FOUND."""
    return FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
