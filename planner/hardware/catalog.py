"""The GPUs the planner knows: memory as the driver reports it, arch, low-precision support, links.

`memory_bytes` is the total the management library reports (NVML `nvmlDeviceGetMemoryInfo().total`,
amdsmi `amdsmi_get_gpu_memory_total(VRAM)`), which is what an engine can actually carve up.
`guide_memory_gb` is the round figure the deployment guides use (facts §6) or, for parts the guides
do not cover, the datasheet figure. Both are kept: plans use the first, tables quote the second.

Sources for reported totals (nvidia-smi / amd-smi output in public issues and logs):
  H100 81559 MiB, A100-80GB 81920, A100-40GB 40960, L40S 46068: modal-labs/modal-client PR #2797.
  H200 143771, B200 183359, B300 SXM6 AC 275040, GB200 189471, H20 97871, RTX 4090 24564,
  RTX 5090 32607: nvidia-smi tables in public repositories.
  MI300X 196592 MiB (rocm-smi: 206141652992 B), MI325X 262128, MI355X 294896: amd-smi output.
  L4 23034, L40 46068, A10G 23028, H800 81559, MI250X 65520 per GCD: nvidia-smi / rocm-smi output
  in public logs (datasheet-derived where no log was at hand: treat as +-1%).
Bandwidths are vendor datasheet peaks (GB/s). Interconnect figures are per GPU, both directions.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from qwen35.planner.errors import InputError

MIB = 1 << 20


@dataclass(frozen=True)
class GpuModel:
    """One GPU product as the planner sees it."""

    key: str
    vendor: str  # "nvidia" | "amd"
    marketing_name: str
    memory_bytes: int  # total memory as NVML / amdsmi report it
    guide_memory_gb: float  # the deployment guides' (facts §6) or the datasheet's round figure
    arch: str  # "sm90", "sm100", "gfx942", ...
    compute_capability: tuple[int, int] | None  # None for AMD
    fp8: bool
    fp4: str | None  # None | "nvfp4" | "mxfp4"
    memory_bandwidth_gbps: float
    interconnect: str
    interconnect_gbps: float  # per GPU, both directions
    blackwell: bool
    default_count: int  # typical GPUs per node, used when a target gives no count
    aliases: tuple[str, ...] = ()
    # Whole words of a reported name that identify the family ("h100" in "NVIDIA H100 NVL");
    # a family match is only trusted when the reported memory agrees (see match_detected).
    name_tokens: tuple[str, ...] = ()

    @property
    def tp_across_nodes(self) -> bool:
        """Whether a TP group may span nodes: NVLink / Infinity Fabric parts come in RDMA-linked nodes; PCIe cards do not."""
        return not self.interconnect.startswith("PCIe")

    @property
    def memory_gib(self) -> float:
        """Reported total memory in GiB."""
        return self.memory_bytes / (1 << 30)


def _nvidia(key, name, mib, guide_gb, arch, cc, *, fp8=True, fp4=None, bandwidth, link, link_gbps,
            blackwell=False, count=8, aliases=(), tokens=()) -> GpuModel:
    return GpuModel(key, "nvidia", name, mib * MIB, guide_gb, arch, cc, fp8, fp4, bandwidth, link,
                    link_gbps, blackwell, count, tuple(aliases), tuple(tokens))


def _amd(key, name, mib, guide_gb, arch, *, fp8=True, fp4=None, bandwidth, link_gbps, aliases=(),
         tokens=()) -> GpuModel:
    return GpuModel(key, "amd", name, mib * MIB, guide_gb, arch, None, fp8, fp4, bandwidth,
                    "Infinity Fabric (XGMI)", link_gbps, False, 8, tuple(aliases), tuple(tokens))


# Node sizes: HGX / OAM baseboards carry 8 GPUs. A GB200 NVL72 compute tray (what one OS
# instance sees) carries 2 Grace-Blackwell superchips = 4 GPUs. GeForce cards default to 1.
GPU_MODELS: tuple[GpuModel, ...] = (
    # H100 SXM5: 3.35 TB/s HBM3, NVLink 4 900 GB/s. The PCIe card (2.0 TB/s, no NVSwitch) reports
    # the same total and maps here too; detection reports its real links.
    _nvidia("H100", "NVIDIA H100 80GB", 81559, 80, "sm90", (9, 0), bandwidth=3350,
            link="NVLink 4", link_gbps=900,
            aliases=("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100", "H100 SXM5",
                     "H100 SXM", "H100 PCIe", "H100 80GB", "H100-SXM5-80GB"),
            tokens=("h100",)),
    _nvidia("H200", "NVIDIA H200 141GB", 143771, 141, "sm90", (9, 0), bandwidth=4800,
            link="NVLink 4", link_gbps=900,
            aliases=("NVIDIA H200", "NVIDIA H200 NVL", "H200 SXM", "H200 SXM5", "H200 NVL",
                     "H200 141GB"),
            tokens=("h200",)),
    # H20: the export Hopper, 96 GB HBM3 at 4.0 TB/s, NVLink 900 GB/s, full FP8.
    _nvidia("H20", "NVIDIA H20 96GB", 97871, 96, "sm90", (9, 0), bandwidth=4000,
            link="NVLink 4", link_gbps=900, aliases=("NVIDIA H20", "H20 96GB"), tokens=("h20",)),
    # H800: the export H100, same memory and FP8, NVLink cut to 400 GB/s.
    _nvidia("H800", "NVIDIA H800 80GB", 81559, 80, "sm90", (9, 0), bandwidth=3350,
            link="NVLink 4", link_gbps=400, aliases=("NVIDIA H800", "NVIDIA H800 80GB HBM3", "H800 SXM5"),
            tokens=("h800",)),
    _nvidia("B200", "NVIDIA B200", 183359, 183, "sm100", (10, 0), fp4="nvfp4", bandwidth=8000,
            link="NVLink 5", link_gbps=1800, blackwell=True,
            aliases=("NVIDIA B200", "B200 SXM", "HGX B200", "DGX B200"), tokens=("b200",)),
    # B300 (Blackwell Ultra) reports as "NVIDIA B300 SXM6 AC", compute capability 10.3.
    _nvidia("B300", "NVIDIA B300", 275040, 275, "sm103", (10, 3), fp4="nvfp4", bandwidth=8000,
            link="NVLink 5", link_gbps=1800, blackwell=True,
            aliases=("NVIDIA B300 SXM6 AC", "NVIDIA B300", "B300 SXM6", "B300 SXM", "HGX B300",
                     "DGX B300"),
            tokens=("b300",)),
    # GB200: 13.4 TB HBM3e per NVL72 rack = 186 GB per GPU (datasheet; not in the guides).
    _nvidia("GB200", "NVIDIA GB200 (Grace Blackwell)", 189471, 186, "sm100", (10, 0),
            fp4="nvfp4", bandwidth=8000, link="NVLink 5", link_gbps=1800, blackwell=True, count=4,
            aliases=("NVIDIA GB200", "GB200 NVL72", "GB200 NVL4"), tokens=("gb200",)),
    _nvidia("A100-40GB", "NVIDIA A100 40GB", 40960, 40, "sm80", (8, 0), fp8=False,
            bandwidth=1555, link="NVLink 3", link_gbps=600,
            aliases=("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "A100-SXM4-40GB",
                     "A100 40GB", "A100-40G"),
            tokens=("a100",)),
    _nvidia("A100-80GB", "NVIDIA A100 80GB", 81920, 80, "sm80", (8, 0), fp8=False,
            bandwidth=2039, link="NVLink 3", link_gbps=600,
            aliases=("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "A100-SXM4-80GB",
                     "A100 80GB", "A100-80G"),
            tokens=("a100",)),
    # Ada parts have FP8 tensor cores (sm89); L40S has no NVLink.
    _nvidia("L40S", "NVIDIA L40S", 46068, 48, "sm89", (8, 9), bandwidth=864,
            link="PCIe 4.0 x16", link_gbps=64, aliases=("NVIDIA L40S",), tokens=("l40s",)),
    _nvidia("L40", "NVIDIA L40", 46068, 48, "sm89", (8, 9), bandwidth=864,
            link="PCIe 4.0 x16", link_gbps=64, aliases=("NVIDIA L40",), tokens=("l40",)),
    # L4: 24 GB GDDR6 at 300 GB/s, a single-slot inference card; cloud VMs carry 1, 2, 4 or 8.
    _nvidia("L4", "NVIDIA L4", 23034, 24, "sm89", (8, 9), bandwidth=300,
            link="PCIe 4.0 x16", link_gbps=64, count=1, aliases=("NVIDIA L4",), tokens=("l4",)),
    # A10G (AWS g5): Ampere sm86, 24 GB GDDR6 at 600 GB/s, no FP8 tensor cores.
    _nvidia("A10G", "NVIDIA A10G", 23028, 24, "sm86", (8, 6), fp8=False, bandwidth=600,
            link="PCIe 4.0 x16", link_gbps=64, count=1, aliases=("NVIDIA A10G",), tokens=("a10g",)),
    _nvidia("RTX4090", "NVIDIA GeForce RTX 4090", 24564, 24, "sm89", (8, 9), bandwidth=1008,
            link="PCIe 4.0 x16", link_gbps=64, count=1,
            aliases=("NVIDIA GeForce RTX 4090", "GeForce RTX 4090", "RTX 4090"),
            tokens=("4090",)),
    # Consumer Blackwell (sm120) has FP4 tensor cores, but the engines' NVFP4 MoE kernels target
    # sm100/sm103: a planner must check `arch`, not only `fp4`.
    _nvidia("RTX5090", "NVIDIA GeForce RTX 5090", 32607, 32, "sm120", (12, 0), fp4="nvfp4",
            bandwidth=1792, link="PCIe 5.0 x16", link_gbps=128, blackwell=True, count=1,
            aliases=("NVIDIA GeForce RTX 5090", "GeForce RTX 5090", "RTX 5090"),
            tokens=("5090",)),
    # amdsmi market names vary between machines and ROCm releases for the same part
    # ("AMD Instinct MI300X", "... OAM", "... VF" under SR-IOV, "MI300X-O", sometimes "N/A"):
    # match_detected falls back to the gfx target and the memory size.
    # MI300X/MI325X: 8 GPUs on Infinity Fabric, 7 links x 128 GB/s = 896 GB/s per GPU.
    _amd("MI300X", "AMD Instinct MI300X", 196592, 192, "gfx942", bandwidth=5300, link_gbps=896,
         aliases=("AMD Instinct MI300X", "AMD Instinct MI300X OAM", "AMD Instinct MI300X VF",
                  "Instinct MI300X", "MI300X-O", "MI300X OAM"),
         tokens=("mi300x",)),
    _amd("MI325X", "AMD Instinct MI325X", 262128, 256, "gfx942", bandwidth=6000, link_gbps=896,
         aliases=("AMD Instinct MI325X", "AMD Instinct MI325X OAM", "AMD Instinct MI325X VF",
                  "Instinct MI325X", "MI325X-O", "MI325X OAM"),
         tokens=("mi325x",)),
    # MI250X: each of its two GCDs is its own device (64 GB HBM2e, 1.6 TB/s): 4 OAM cards show as
    # 8 GPUs. CDNA2 (gfx90a) has no FP8.
    _amd("MI250X", "AMD Instinct MI250X", 65520, 64, "gfx90a", fp8=False, bandwidth=1638, link_gbps=400,
         aliases=("AMD Instinct MI250X", "AMD Instinct MI250X/MI250", "Instinct MI250X"),
         tokens=("mi250x",)),
    # MI355X: 8 TB/s HBM3E, MXFP4; Infinity Fabric 7 x 153.6 GB/s (third-party figure).
    _amd("MI355X", "AMD Instinct MI355X", 294896, 288, "gfx950", fp4="mxfp4", bandwidth=8000,
         link_gbps=1075,
         aliases=("AMD Instinct MI355X", "AMD Instinct MI355X OAM", "Instinct MI355X",
                  "MI355X-O", "MI355X OAM"),
         tokens=("mi355x",)),
)

# A reported or typed name must be within this share of a model's memory for a family match.
MEMORY_TOLERANCE = 0.08
_VENDOR_WORDS = ("nvidia", "amd", "geforce", "instinct", "radeon")


def _squash(text: str) -> str:
    """Lower-case alphanumerics only: "NVIDIA A100-SXM4-80GB" -> "nvidiaa100sxm480gb"."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


def _lookup_forms(text: str) -> set[str]:
    """The squashed name, with and without leading vendor/brand words."""
    words = _words(text)
    forms = {"".join(words)}
    while words and words[0] in _VENDOR_WORDS:
        words = words[1:]
        forms.add("".join(words))
    forms.discard("")
    return forms


def _build_index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in GPU_MODELS:
        for text in (model.key, model.marketing_name, *model.aliases):
            for form in _lookup_forms(text):
                index.setdefault(form, model)
    return index


_INDEX = _build_index()


def lookup_gpu(name: str) -> GpuModel:
    """The catalog model for a key or alias ("H100", "nvidia h100 pcie"); InputError if unknown."""
    for form in _lookup_forms(name or ""):
        if form in _INDEX:
            return _INDEX[form]
    keys = [model.key for model in GPU_MODELS]
    squashed = _squash(name or "")
    close = difflib.get_close_matches(squashed, list(_INDEX), n=1, cutoff=0.5)
    suggestion = f"did you mean {_INDEX[close[0]].key}? " if close else ""
    raise InputError(f"unknown GPU '{name}'", f"{suggestion}known GPUs: {', '.join(keys)}")


def custom_gpu(name: str, memory_bytes: int) -> GpuModel:
    """A GPU outside the catalogue, known only by its memory: no FP8/FP4 assumed, PCIe links, one per node."""
    return GpuModel(name, "nvidia", name, memory_bytes, round(memory_bytes / 10**9), "unknown", None, False, None,
                    0.0, "PCIe (assumed: not in the catalogue)", 0.0, False, 1)


def gpu_for(name: str, memory_bytes: int | None = None) -> GpuModel:
    """The catalogue model for `name`, else (with its memory given or measured) a custom one; InputError if neither."""
    try:
        return lookup_gpu(name)
    except InputError as error:
        if memory_bytes:
            return custom_gpu(name.strip(), memory_bytes)
        raise InputError(error.message, error.hint + "; or give its memory with --gpu-memory GIB") from None


def parse_gpu_target(text: str, memory_bytes: int | None = None) -> tuple[GpuModel, int]:
    """Parse "H200:8" into (model, count); without ":N" the count is the model's usual node size."""
    name, sep, count_text = (text or "").strip().rpartition(":")
    if not sep:
        name, count_text = count_text, ""
    model = gpu_for(name.strip(), memory_bytes)
    if not sep:
        return model, model.default_count
    count_text = count_text.strip()
    if not (count_text.isascii() and count_text.isdigit()) or int(count_text) <= 0:
        raise InputError(
            f"bad GPU count '{count_text}' in '{text}': it must be a whole number of GPUs >= 1",
            f"try --gpu {model.key}:{model.default_count}",
        )
    return model, int(count_text)


def normalize_gfx_target(target: str | int | None) -> str | None:
    """"gfx942:sramecc+:xnack-" or the integer 0x942 -> "gfx942"; None when absent."""
    if target is None or target == "":
        return None
    if isinstance(target, int):
        # amdsmi stores the target as hex digits in an integer (0x942 -> gfx942).
        return f"gfx{target:x}"
    text = str(target).strip().lower().split(":", 1)[0]
    if not text or text in ("n/a", "gfx"):
        return None
    return text if text.startswith("gfx") else f"gfx{text}"


def _memory_agrees(model: GpuModel, memory_bytes: int) -> bool:
    return abs(memory_bytes - model.memory_bytes) <= MEMORY_TOLERANCE * model.memory_bytes


def _closest_by_memory(candidates: list[GpuModel], memory_bytes: int | None) -> GpuModel | None:
    if not memory_bytes:
        return candidates[0] if len(candidates) == 1 else None
    agreeing = [model for model in candidates if _memory_agrees(model, memory_bytes)]
    if not agreeing:
        return None
    return min(agreeing, key=lambda model: abs(model.memory_bytes - memory_bytes))


def match_detected(name: str | None, memory_bytes: int | None = None,
                   gfx_target: str | int | None = None) -> GpuModel | None:
    """The catalog model for a detected device, or None when it is not one we know.

    An exact alias wins outright. Otherwise a family word in the name ("h100" in "NVIDIA H100 NVL")
    or, for AMD, the gfx target picks candidates, and the reported memory must agree within
    MEMORY_TOLERANCE: an H100 NVL (94 GB) is not our H100, and MI300X vs MI325X (both gfx942)
    are told apart by memory.
    """
    name = (name or "").strip()
    for form in _lookup_forms(name):
        if form in _INDEX:
            return _INDEX[form]
    words = set(_words(name))
    by_family = [model for model in GPU_MODELS if words & set(model.name_tokens)]
    if by_family:
        return _closest_by_memory(by_family, memory_bytes)
    gfx = normalize_gfx_target(gfx_target)
    if gfx:
        by_arch = [model for model in GPU_MODELS if model.vendor == "amd" and model.arch == gfx]
        if by_arch:
            return _closest_by_memory(by_arch, memory_bytes)
    return None
