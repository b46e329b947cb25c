"""The planning flags `qwen35 plan` and `qwen35 launch` share, declared once.

Each is a typing.Annotated alias that carries its typer.Option; a command lists the ones it
takes with their defaults (`model: Model = None`). The defaults stay in the signatures, as
typer requires for Annotated options.
"""
from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from qwen35.planner.errors import InputError

_MEMORY_UNITS = {"": 1 << 30, "g": 1 << 30, "gib": 1 << 30, "m": 1 << 20, "mib": 1 << 20, "gb": 10**9, "mb": 10**6,
                 "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}

Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Registry name (Qwen3.5-9B), hub id (Qwen/Qwen3.5-9B-FP8) or a local checkpoint directory.")]
Gpu = Annotated[str, typer.Option(
    "--gpu", help="GPU target NAME[:COUNT] (e.g. H200:8), 'cpu' for the bundled runtime, or 'auto' to detect.")]
GpuMemory = Annotated[Optional[str], typer.Option(
    "--gpu-memory", help="Memory per GPU as the driver reports it, in GiB (47.5, 47.5GiB) or with a unit "
                         "(49140MiB as nvidia-smi prints it, 51.5GB): for a GPU outside the catalogue "
                         "(planned without FP8/FP4, PCIe links), or to override a catalogue part's.")]
FallbackGpu = Annotated[Optional[str], typer.Option(
    "--fallback-gpu", help="Target to use when --gpu auto finds no GPU.")]
Nodes = Annotated[Optional[int], typer.Option(
    "--nodes", help="Nodes to plan across (default 1: multi-node plans only when asked).")]
Precision = Annotated[Optional[str], typer.Option(
    "--precision", help="bf16, fp8 or nvfp4 (default: the checkpoint's own).")]
Engine = Annotated[str, typer.Option("--engine", help="sglang, vllm or bundled.")]
EngineVersion = Annotated[Optional[str], typer.Option(
    "--engine-version", help="Engine release to render for when it is not installed.")]
ContextLength = Annotated[Optional[int], typer.Option(
    "--context-length", help="Context length (default 262144, reduced to fit, not below 131072).")]
Strategy = Annotated[str, typer.Option(
    "--strategy",
    help="balanced (default: keep 262144 tokens, grow tp first), throughput (more replicas, shorter context "
         "first), or latency (MTP speculative decoding, context kept).")]
MaxRunningRequests = Annotated[Optional[int], typer.Option(
    "--max-running-requests",
    help="Concurrent requests each data-parallel replica must hold (the engines read their flag per replica); "
         "the plan's max_running_requests is the total over replicas.")]
MambaStrategy = Annotated[Optional[str], typer.Option(
    "--mamba-strategy", help="no_buffer or extra_buffer (SGLang).")]
MambaSsmDtype = Annotated[str, typer.Option(
    "--mamba-ssm-dtype", help="Recurrent-state dtype: fp32 (default) or bf16.")]
Host = Annotated[str, typer.Option("--host", help="Address the engine listens on.")]
Port = Annotated[int, typer.Option("--port", help="Port the engine listens on.")]
ServedModelName = Annotated[Optional[str], typer.Option(
    "--served-model-name", help="Name clients use in `model` (default: the model's).")]
DistInitAddr = Annotated[Optional[str], typer.Option(
    "--dist-init-addr", help="HOST:PORT of node 0 for multi-node plans.")]
# Forced layout sizes: honoured, or refused with the reason (heads that do not divide, FP8 block-128 shards).
_FORCE = "Force the {what}; refused with the reason when the model or engine cannot run it."
Tp = Annotated[Optional[int], typer.Option("--tp", help=_FORCE.format(what="tensor-parallel size"))]
Dp = Annotated[Optional[int], typer.Option("--dp", help=_FORCE.format(what="data-parallel replicas in a node"))]
Ep = Annotated[Optional[int], typer.Option("--ep", help=_FORCE.format(what="expert-parallel size: 1, or the TP size"))]


def memory_size_bytes(text: str) -> int:
    """--gpu-memory's value in bytes: a bare number is GiB; GiB/MiB/TiB (or G/M/T) are binary, GB/MB/TB decimal."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    size = int(float(match.group(1)) * _MEMORY_UNITS[unit]) if match and unit in _MEMORY_UNITS else 0
    if size <= 0:
        raise InputError(f"--gpu-memory must be a positive size such as 47.5 (GiB), 47.5GiB or 49140MiB, got {text!r}",
                         "try --gpu-memory 48")
    return size
