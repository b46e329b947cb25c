"""SGLang command lines, spelled for the SGLang release that will run them."""
from __future__ import annotations

import json

from qwen35.planner.engines import versions
from qwen35.planner.engines.settings import ServeSettings
from qwen35.planner.plan import EngineCommand

# The mamba cache strategy flag was renamed: up to 0.5.13.post1 the parser takes only
# --mamba-scheduler-strategy; 0.5.14-0.5.19 take --mamba-radix-cache-strategy and keep the old
# spelling as an alias; from 0.5.20 the old spelling is rejected (checked against each
# release's own parser in tests/planner/contract).
NEW_MAMBA_FLAG_FIRST = "0.5.14"
# --flashinfer-allreduce-fusion-backend replaces --enable-flashinfer-allreduce-fusion from 0.5.14;
# --mm-feature-transport replaces the SGLANG_USE_CUDA_IPC_TRANSPORT switch from 0.5.16.
ALLREDUCE_BACKEND_FIRST = "0.5.14"
MM_TRANSPORT_FLAG_FIRST = "0.5.16"
NEWEST_KNOWN = "0.5.23"
DEFAULT_DIST_PORT = 20000
MULTITHREAD_LOAD = {"enable_multithread_load": "true", "num_threads": 64}
SPECULATIVE_STEPS = 3


def parse_version(text: str) -> tuple[int, ...]:
    """'0.5.10.post1' -> (0, 5, 10): the numeric release part, for ordering."""
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def resolve_version(requested: str | None) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return versions.resolve_version("sglang", requested, NEWEST_KNOWN)


def mamba_flag(version: str) -> str:
    """The spelling of the mamba cache strategy flag that this release accepts."""
    if parse_version(version) >= parse_version(NEW_MAMBA_FLAG_FIRST):
        return "--mamba-radix-cache-strategy"
    return "--mamba-scheduler-strategy"


def _mm_attention_backend(settings: ServeSettings) -> str | None:
    if settings.vendor != "nvidia":
        return None
    if settings.arch == "sm90":
        return "fa3"
    if settings.arch in ("sm100", "sm103"):
        return "fa4"
    return None


def render(settings: ServeSettings, version: str) -> tuple[list[EngineCommand], list[str]]:
    """One command per node, and notes about choices the release forced."""
    notes: list[str] = []
    base = [
        "python3", "-m", "sglang.launch_server",
        "--model-path", settings.model_path,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--tp-size", str(settings.tp),
    ]
    if settings.ep > 1:
        base += ["--ep-size", str(settings.ep)]
    if settings.dp > 1:
        base += ["--dp-size", str(settings.dp)]
    base += [
        "--context-length", str(settings.context_length),
        "--mem-fraction-static", f"{settings.mem_fraction:.3f}",
        "--max-running-requests", str(settings.max_running_requests),
        "--page-size", str(settings.page_size),
        mamba_flag(version), settings.mamba_strategy,
    ]
    if settings.disable_radix_cache:
        base.append("--disable-radix-cache")
    if settings.mamba_ssm_dtype != "fp32":
        base += ["--mamba-ssm-dtype", {"bf16": "bfloat16", "fp16": "float16"}[settings.mamba_ssm_dtype]]
    base += ["--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder"]
    # Structured outputs on the bundled runtime's library: the same JSON-schema coverage on every engine.
    base += ["--grammar-backend", "llguidance"]
    env: dict[str, str] = {}
    backend = _mm_attention_backend(settings)
    if backend:
        base += ["--mm-attention-backend", backend]
    if settings.vendor == "amd":
        base += ["--attention-backend", "aiter"]
        env["SGLANG_USE_AITER"] = "1"
    if settings.precision == "nvfp4":
        base += ["--quantization", "modelopt_fp4", "--kv-cache-dtype", "fp8_e4m3"]
    release = parse_version(version)
    if settings.allreduce_fusion:
        if release >= parse_version(ALLREDUCE_BACKEND_FIRST):
            base += ["--flashinfer-allreduce-fusion-backend", "auto"]
        else:
            base.append("--enable-flashinfer-allreduce-fusion")
    if settings.multithread_load:
        base += ["--model-loader-extra-config", json.dumps(MULTITHREAD_LOAD, separators=(",", ":"))]
    if settings.speculative_tokens:
        base += [
            "--speculative-algorithm", "EAGLE",
            "--speculative-num-steps", str(SPECULATIVE_STEPS),
            "--speculative-eagle-topk", "1",
            "--speculative-num-draft-tokens", str(settings.speculative_tokens),
        ]
        env["SGLANG_ENABLE_SPEC_V2"] = "1"
    if settings.vendor == "nvidia" and settings.nodes == 1:
        # Multimodal features cross processes through CUDA IPC instead of host copies (single node only).
        if release >= parse_version(MM_TRANSPORT_FLAG_FIRST):
            base += ["--mm-feature-transport", "cuda_ipc"]
        else:
            env["SGLANG_USE_CUDA_IPC_TRANSPORT"] = "1"
    base += list(settings.extra_args)
    if settings.nodes == 1:
        return [EngineCommand(0, base, env)], notes
    address = settings.dist_init_addr or f"NODE0_IP:{DEFAULT_DIST_PORT}"
    if settings.dist_init_addr is None:
        notes.append("replace NODE0_IP with the address of node 0 (or pass --dist-init-addr HOST:PORT)")
    commands = [
        EngineCommand(rank, base + ["--nnodes", str(settings.nodes), "--node-rank", str(rank),
                                    "--dist-init-addr", address], dict(env))
        for rank in range(settings.nodes)
    ]
    return commands, notes
