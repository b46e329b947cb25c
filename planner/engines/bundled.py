"""Command line of qwen35's own bundled runtime (`qwen35 serve`)."""
from __future__ import annotations

from importlib import metadata

from qwen35.planner.engines import fixed_slots
from qwen35.planner.engines.settings import Candidate, PoolSizing, ServeSettings
from qwen35.planner.figures import GIB
from qwen35.planner.plan import EngineCommand

SPECULATIVE_TOKENS = 2
# The share of the GPU the runtime's pools and weights may take, and what its own working set
# (one prefill chunk's activations, graphs) needs beside them; runtime/engine/memory_sizing.py
# sizes the real pools from these after measuring. The default running requests per process.
UTILIZATION = 0.90
WORKING_SET_BYTES = 1 * GIB
DEFAULT_MAX_SEQS = 64
NAME = "the bundled runtime"
PRECISIONS = ("bf16", "fp8")
FOLLOWS_DEPLOYMENT_GUIDE = False
MAX_OFFERED_NODES = 1
DATA_PARALLEL = False


def resolve_version(requested: str | None) -> str:
    """The bundled runtime is versioned with qwen35 itself."""
    try:
        return metadata.version("qwen35")
    except metadata.PackageNotFoundError:
        return requested or "0.1.0"


def max_gpus(gpus_per_node: int, nodes: int | None) -> int:
    """One process on one GPU."""
    return 1


def weights_precision(precision: str) -> str:
    """The runtime dequantises FP8 checkpoints to BF16 at load."""
    return "bf16" if precision == "fp8" else precision


def mamba_choice(vendor: str, requested: str | None, strategy: str) -> tuple[str, int, bool, list[str]]:
    """One state slot per sequence, no mamba strategy to choose."""
    return "no_buffer", 1, False, []


def size(candidate: Candidate) -> PoolSizing:
    """One process's pools, as runtime/engine/memory_sizing.py will size them from measured memory."""
    # Prefix caching keeps one state checkpoint per running request (runtime/engine/config.py).
    return fixed_slots.size("bundled", candidate, UTILIZATION, WORKING_SET_BYTES, DEFAULT_MAX_SEQS,
                            checkpoints_per_request=1)


def render(settings: ServeSettings, version: str) -> tuple[list[EngineCommand], list[str]]:
    """One `qwen35 serve` command on one device."""
    device = "cpu" if settings.vendor == "cpu" else "cuda"
    argv = [
        "qwen35", "serve", "--model", settings.model_path,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--device", device,
        "--dtype", "float32" if device == "cpu" else "bfloat16",
        "--max-model-len", str(settings.context_length),
        "--max-running-requests", str(settings.max_running_requests),
    ]
    if settings.speculative_tokens:
        argv += ["--speculative-tokens", str(settings.speculative_tokens)]
    argv += list(settings.extra_args)
    return [EngineCommand(0, argv, {})], []
