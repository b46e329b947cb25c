"""SGLang command lines, spelled for the SGLang release that will run them."""
from __future__ import annotations

import json

from qwen35.planner.engines import versions
from qwen35.planner.engines.settings import PoolSizing, ServeSettings
from qwen35.planner.figures import MIB, Figure, human_bytes
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
SPECULATIVE_TOKENS = 4
# Without --max-running-requests SGLang caps a speculative server at 48 running requests.
SPEC_RUNNING_CAP = 48
# --mamba-full-memory-ratio default: the state pool's share of what the weights leave is r/(1+r).
MAMBA_FULL_MEMORY_RATIO = 0.9
# Memory a multimodal model reserves out of the KV budget for allocations made after sizing
# (SGLANG_VLM_CACHE_SIZE_MB, plus SGLANG_MM_FEATURE_CACHE_MB with a cuda_ipc feature transport).
VLM_CACHE_BYTES = 100 * MIB
MM_FEATURE_CACHE_BYTES = 1024 * MIB


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



# SGLang's default chunked-prefill size and CUDA-graph batch size by GPU memory (facts §5).
_DEFAULTS_BY_MEMORY_GB = ((20, 2048, 8), (35, 2048, 24), (60, 4096, 32), (90, 8192, 256), (160, 8192, 256))
_DEFAULTS_LARGEST = (16384, 512)


def defaults(gpu_memory_bytes: int) -> tuple[int, int]:
    """SGLang's chunked_prefill_size and cuda_graph_max_bs for a GPU of this size."""
    gpu_mb = gpu_memory_bytes / MIB
    for limit_gb, chunked, graph_bs in _DEFAULTS_BY_MEMORY_GB:
        if gpu_mb < limit_gb * 1024:
            return chunked, graph_bs
    return _DEFAULTS_LARGEST


def mem_fraction(gpu_memory_bytes: int, tp: int, pp: int = 1) -> Figure:
    """mem_fraction_static from SGLang's reserve rule: activations, graphs and NCCL, as SGLang computes it."""
    gpu_mb = gpu_memory_bytes / MIB
    chunked, graph_bs = defaults(gpu_memory_bytes)
    reserved = 512 + 1.5 * max(chunked, 2048) + tp * pp / 8 * 1024 + 2 * graph_bs
    floor = ""
    if gpu_mb > 60 * 1024 and reserved < 10 * 1024:
        reserved = 10 * 1024
        floor = " (raised to the 10 GiB floor for GPUs above 60 GB)"
    fraction = round((gpu_mb - reserved) / gpu_mb, 3)
    return Figure(
        "mem_fraction_static", fraction, "fraction",
        f"reserved = 512 + 1.5 x max({chunked} chunked prefill, 2048) + {tp}x{pp}/8 x 1024 + 2 x {graph_bs} "
        f"cuda-graph bs = {reserved:.0f} MiB{floor}; ({gpu_mb:.0f} - {reserved:.0f}) / {gpu_mb:.0f} MiB = {fraction}",
    )


def slots_per_request(mamba_strategy: str, disable_radix_cache: bool) -> int:
    """State slots SGLang books per running request: 3 under the mamba radix cache, 2 more for
    extra_buffer's ping-pong buffers under the overlap scheduler, 1 without the radix cache."""
    if disable_radix_cache:
        return 1
    return 5 if mamba_strategy == "extra_buffer" else 3


def multimodal_reserve_bytes(vendor: str, nodes: int, version: str) -> float:
    """What a multimodal model keeps out of the KV budget for after-sizing allocations."""
    cuda_ipc = vendor == "nvidia" and nodes == 1 and parse_version(version) >= parse_version(MM_TRANSPORT_FLAG_FIRST)
    return VLM_CACHE_BYTES + (MM_FEATURE_CACHE_BYTES if cuda_ipc else 0)


def _estimated_running(kv_tokens: int, context_length: int) -> int:
    # SGLang's default when no --max-running-requests is given: 512 per context's worth of KV, in [2048, 4096].
    return max(min(int(kv_tokens / context_length * 512), 4096), 2048)


def size(*, gpu_bytes: int, vendor: str, nodes: int, version: str, tp: int, context: int, weights_bytes: float,
         kv_per_token: float, state_per_slot: float, page_size: int, mamba_strategy: str,
         disable_radix_cache: bool, draft_tokens: int, requested_running: int | None) -> PoolSizing:
    """One replica's pools as SGLang's KV-cache configurator sizes them for the command we render.

    Follows 0.5.23's _profile_available_bytes / _handle_max_mamba_cache / resolve_max_num_reqs
    (checked by tests/planner/contract/test_engine_sizing.py): rest = static - weights -
    multimodal reserve; with the radix cache the state pool K takes rest x r/(1+r) (jointly with
    the speculative intermediate states), without it K is the running-request limit; every pool
    carries one padding slot; the KV pool is the remainder in whole pages.
    """
    figures: list[Figure] = []
    fraction_figure = mem_fraction(gpu_bytes, tp)
    fraction = fraction_figure.value
    effective = fraction * (0.85 if vendor == "amd" and context > 8192 else 1.0)
    static = gpu_bytes * effective
    figures.append(fraction_figure)
    figures.append(Figure("static_bytes", static, "bytes",
                          f"{human_bytes(gpu_bytes)} x {fraction}"
                          + (" x 0.85 (SGLang scales the fraction for aiter above 8K context)" if effective != fraction else "")
                          + f" = {human_bytes(static)}"))
    reserve = multimodal_reserve_bytes(vendor, nodes, version)
    rest = static - weights_bytes - reserve
    figures.append(Figure("kv_and_state_budget_per_gpu", rest, "bytes",
                          f"static {human_bytes(static)} - weights {human_bytes(weights_bytes)} - multimodal "
                          f"reserve {human_bytes(reserve)} = {human_bytes(rest)}"))
    per_request = slots_per_request(mamba_strategy, disable_radix_cache)
    cap = requested_running or (SPEC_RUNNING_CAP if draft_tokens else None)
    if rest <= 0:
        figures.append(Figure("state_slots", 0, "slots", "no memory left after weights"))
        figures.append(Figure("kv_tokens", 0, "tokens", "no memory left after weights"))
        return PoolSizing(static, fraction, 0, 0, per_request, 0, "KV tokens", figures)
    if disable_radix_cache:
        # The state pool is the running-request limit itself; pick that limit from the ratio split.
        budget = rest * MAMBA_FULL_MEMORY_RATIO / (1 + MAMBA_FULL_MEMORY_RATIO)
        by_split = int((budget - state_per_slot * (1 + draft_tokens)) // (state_per_slot * (1 + draft_tokens)))
        split_tokens = int((rest - budget) // kv_per_token)
        slots = max(0, min(cap or _estimated_running(split_tokens, context), split_tokens // 2, by_split))
        intermediate = state_per_slot * (slots + 1) * draft_tokens
        slots_equation = (f"radix cache off: the state pool is the running-request limit = min({cap or 'estimate'}, "
                          f"{human_bytes(budget)} (= rest x {MAMBA_FULL_MEMORY_RATIO}/(1+{MAMBA_FULL_MEMORY_RATIO})) "
                          f"// {human_bytes(state_per_slot * (1 + draft_tokens))}) = {slots}")
    else:
        budget = rest * MAMBA_FULL_MEMORY_RATIO / (1 + MAMBA_FULL_MEMORY_RATIO)
        if draft_tokens:
            slots = int((budget - state_per_slot * (1 + draft_tokens))
                        // (state_per_slot * (1 + draft_tokens / per_request)))
            held = min(max(1, cap), slots // per_request)
            intermediate = state_per_slot * (held + 1) * draft_tokens
        else:
            slots = int((budget - state_per_slot) // state_per_slot)
            intermediate = 0.0
        slots_equation = (f"({human_bytes(budget)} (= rest x {MAMBA_FULL_MEMORY_RATIO}/(1+{MAMBA_FULL_MEMORY_RATIO})) - "
                          f"one padding slot) / {human_bytes(state_per_slot)}"
                          + (f" x (1 + {draft_tokens}/{per_request}) with the draft states" if draft_tokens else "")
                          + f" = {slots}")
    figures.append(Figure("state_slots", slots, "slots", slots_equation))
    if intermediate:
        figures.append(Figure("spec_intermediate_state_bytes", intermediate, "bytes",
                              f"(running + 1 padding) x {draft_tokens} draft tokens x {human_bytes(state_per_slot)} "
                              f"= {human_bytes(intermediate)}"))
    state_bytes = (slots + 1) * state_per_slot + intermediate
    tokens = max(0, int((rest - state_bytes) // kv_per_token) // page_size * page_size)
    figures.append(Figure("kv_tokens", tokens, "tokens",
                          f"({human_bytes(rest)} - ({slots} + 1 padding) slots x {human_bytes(state_per_slot)}"
                          f"{' - draft states ' + human_bytes(intermediate) if intermediate else ''}) / "
                          f"{int(kv_per_token)} B, in whole pages of {page_size} = {tokens}"))
    limits = {"the requested value" if requested_running else
              ("SGLang's speculation cap" if draft_tokens else "SGLang's estimate"):
              cap or _estimated_running(tokens, context),
              "KV tokens": tokens // 2, "state slots": slots // per_request}
    binding = min(limits, key=limits.get)
    running = max(0, limits[binding])
    figures.append(Figure(
        "max_running_requests", running, "requests",
        "min(" + ", ".join(f"{name} {value}" for name, value in limits.items()) + f") = {running}, bound by {binding}"))
    return PoolSizing(static, fraction, tokens, slots, per_request, running, binding, figures)

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
    elif settings.mamba_strategy == "no_buffer":
        # With the mamba radix cache on, no_buffer cannot run under the overlap scheduler: 0.5.19 to 0.5.23 (read in their
        # sources) refuse to start ("no_buffer do not support overlap schedule"); 0.5.13 turns
        # it off themselves.
        base.append("--disable-overlap-schedule")
    if settings.mamba_ssm_dtype != "fp32":
        base += ["--mamba-ssm-dtype", {"bf16": "bfloat16", "fp16": "float16"}[settings.mamba_ssm_dtype]]
    base += ["--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder"]
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
