"""vLLM command lines (`vllm serve`)."""
from __future__ import annotations

import json

from qwen35.planner.engines import fixed_slots, versions
from qwen35.planner.engines.settings import Candidate, PoolSizing, ServeSettings
from qwen35.planner.figures import GIB
from qwen35.planner.plan import EngineCommand

NEWEST_KNOWN = "0.33.0"
# The first release that registers the Qwen3.5 architectures (Qwen3_5ForConditionalGeneration,
# Qwen3_5MoeForConditionalGeneration): 0.16.0 refuses them as "not supported for now".
OLDEST_SUPPORTED = "0.17.0"
SPECULATIVE_TOKENS = 2
# Without SGLang's explicit reserve formula: what vLLM's non-KV working set needs (activations of
# one prefill chunk, CUDA graphs, communication buffers), an estimate; --max-num-seqs' default.
UTILIZATION = 0.90
WORKING_SET_BYTES = 3 * GIB
DEFAULT_MAX_SEQS = 256
NAME = "vLLM"
PRECISIONS = ("bf16", "fp8", "nvfp4")
FOLLOWS_DEPLOYMENT_GUIDE = False
MAX_OFFERED_NODES = 1
DATA_PARALLEL = True


def resolve_version(requested: str | None) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return versions.resolve_version("vllm", requested, NEWEST_KNOWN, OLDEST_SUPPORTED)


def max_gpus(gpus_per_node: int, nodes: int | None) -> int:
    """The most GPUs a plan may use: one node (multi-node vLLM is not planned)."""
    return gpus_per_node


def weights_precision(precision: str) -> str:
    """The precision the weights are held in on the GPU: as stored."""
    return precision


def mamba_choice(vendor: str, requested: str | None, strategy: str) -> tuple[str, int, bool, list[str]]:
    """vLLM has no mamba strategy switch: one state per sequence, page size 1 in the plan."""
    return "no_buffer", 1, False, []


def size(candidate: Candidate) -> PoolSizing:
    """One replica's pools under --gpu-memory-utilization, one state slot per sequence."""
    return fixed_slots.size("vllm", candidate, UTILIZATION, WORKING_SET_BYTES, DEFAULT_MAX_SEQS)


def render(settings: ServeSettings, version: str) -> tuple[list[EngineCommand], list[str]]:
    """One single-node `vllm serve` command."""
    argv = [
        "vllm", "serve", settings.model_path,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--tensor-parallel-size", str(settings.tp),
    ]
    if settings.dp > 1:
        argv += ["--data-parallel-size", str(settings.dp)]
    if settings.ep > 1:
        argv.append("--enable-expert-parallel")
    argv += [
        "--max-model-len", str(settings.context_length),
        "--gpu-memory-utilization", f"{settings.mem_fraction:.2f}",
        "--max-num-seqs", str(settings.max_running_requests),
        "--reasoning-parser", "qwen3",
        "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder",
        # Structured outputs on the bundled runtime's library (llguidance, vLLM's "guidance"): the same JSON-schema
        # coverage on every engine. The dotted flag replaced --guided-decoding-backend in 0.10.2, long before
        # Qwen3.5 support.
        "--structured-outputs-config.backend", "guidance",
    ]
    if settings.mamba_ssm_dtype != "fp32":
        argv += ["--mamba-ssm-cache-dtype", {"bf16": "bfloat16", "fp16": "float16"}[settings.mamba_ssm_dtype]]
    else:
        argv += ["--mamba-ssm-cache-dtype", "float32"]
    if settings.speculative_tokens:
        config = {"method": "qwen3_next_mtp", "num_speculative_tokens": settings.speculative_tokens}
        argv += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    argv += list(settings.extra_args)
    env = {"VLLM_USE_V1": "1"} if settings.vendor == "nvidia" else {}
    return [EngineCommand(0, argv, env)], []
