"""SGLang command lines, spelled for the SGLang release that will run them."""
from __future__ import annotations

import json
import math

from qwen35.planner.engines import versions
from qwen35.planner.engines.versions import parse_version
from qwen35.planner.errors import InputError
from qwen35.planner.engines.settings import Candidate, PoolSizing, ServeSettings
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
# The oldest release whose parser and sizing rules our commands are checked against
# (tests/planner/contract); the flag spellings before it differ and are not rendered.
OLDEST_SUPPORTED = "0.5.13.post1"
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
# Up to 0.5.13.post1 the pools are sized by ModelRunner's KV-cache mixin (read in its source):
# no padding slot in the state pools, no multimodal reservation, the running-request limit capped
# by the estimate rather than half the KV tokens, and the EAGLE draft's KV pool (as many tokens,
# its own layer) allocated by the draft worker outside the budget (the 4 GiB EAGLE reserve
# covers it). It also refuses speculation with no_buffer under the mamba radix cache on CUDA.
# 0.5.19 to 0.5.23 (the KV-cache configurator) are read; the releases between are not and get
# the configurator's rules (less KV, never more).
MIXIN_SIZING_LAST = "0.5.13"


NAME = "SGLang"
PRECISIONS = ("bf16", "fp8", "nvfp4")
# The 397B deployment guides are SGLang's: their validated tensor-parallel sizes win over memory minima.
FOLLOWS_DEPLOYMENT_GUIDE = True
DATA_PARALLEL = True
# The most nodes a way out offers; a user may still pass more with --nodes.
MAX_OFFERED_NODES = 4


def resolve_version(requested: str | None) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return versions.resolve_version("sglang", requested, NEWEST_KNOWN, OLDEST_SUPPORTED)


def max_gpus(gpus_per_node: int, nodes: int | None) -> int:
    """The most GPUs a plan may use: the nodes given, else one node (multi-node only when asked)."""
    return gpus_per_node * (nodes or 1)


def weights_precision(precision: str) -> str:
    """The precision the weights are held in on the GPU: as stored."""
    return precision


def mamba_choice(vendor: str, requested: str | None, strategy: str) -> tuple[str, int, bool, list[str]]:
    """Mamba strategy, page size and radix-cache switch under SGLang's rules (facts §5)."""
    reasons = []
    if vendor == "amd":
        if requested == "extra_buffer":
            raise InputError("mamba extra_buffer needs NVIDIA GPUs (FLA/triton kernels)", "use --mamba-strategy no_buffer")
        reasons.append("mamba no_buffer: required on AMD Instinct GPUs")
        reasons.append("page size 16 for aiter attention; the mamba radix cache needs page size 1, "
                       "so the radix cache is off (--disable-radix-cache)")
        return "no_buffer", 16, True, reasons
    chosen = requested or "extra_buffer"
    if chosen == "extra_buffer":
        reasons.append("mamba extra_buffer: overlap scheduling and prefix caching at branch points"
                       + ("; MTP speculation wants it" if strategy == "latency" else ""))
        reasons.append("page size 64: FLA chunk size 64 % page size == 0 and page size % 64 == 0")
        return chosen, 64, False, reasons
    reasons.append("mamba no_buffer (asked for): less state memory, no overlap scheduler; page size 1 as it requires")
    return chosen, 1, False, reasons


def mamba_flag(version: str) -> str:
    """The spelling of the mamba cache strategy flag that this release accepts."""
    if parse_version(version) >= parse_version(NEW_MAMBA_FLAG_FIRST):
        return "--mamba-radix-cache-strategy"
    return "--mamba-scheduler-strategy"



# SGLang's default chunked-prefill size and decode CUDA-graph batch size by GPU memory, as
# (below GB, chunked prefill, graph bs under tp 4, graph bs from tp 4). 0.5.20 raised the
# 20-35 GB row (RTX 4090/5090) from 2048 / 24 / 80.
_CAPACITY_ROWS = ((20, 2048, 8, 8), (35, 4096, 48, 160), (60, 4096, 32, 160), (90, 8192, 256, 512),
                  (160, 8192, 256, 512))
_CAPACITY_ROWS_BEFORE_0_5_20 = ((20, 2048, 8, 8), (35, 2048, 24, 80)) + _CAPACITY_ROWS[2:]
_CAPACITY_LARGEST = (16384, 512)
CAPACITY_ROW_CHANGE = "0.5.20"
# Prefill CUDA graphs reserve 8 MiB per captured size. On CUDA 0.5.19-0.5.23 capture them by
# default; 0.5.13.post1's piecewise graphs are off for multimodal models, but the 8 MiB each is
# kept for every release before 0.5.19 too (the releases between were not read: more headroom,
# never less). On ROCm 0.5.23 captures none; 0.5.19-0.5.20 keep piecewise graphs there.
PREFILL_GRAPHS_OFF_ON_ROCM_FIRST = "0.5.23"
# 0.5.13.post1 reserves 4 GiB more for EAGLE speculation; 0.5.19 no longer does.
SPEC_RESERVE_LAST_BEFORE = "0.5.19"
SPEC_RESERVE_MIB = 4096
RESERVE_FLOOR_MIB = 10 * 1024     # for GPUs above 60 GB
# The vision-tower factor: 0.95 x clamp(1 - 0.1 x (layers x hidden^2 / (24 x 1024^2) - 1), 0.8, 1.05).
# SGLang reads vision_config.num_hidden_layers, which Qwen3.5's vision config (it says `depth`)
# lacks, so 24 layers are used whatever the depth (0.5.23's own resolution agrees, see
# tests/planner/contract); the hidden size is read as written.
VISION_FACTOR_BASE = 0.95
VISION_LAYERS_READ = 24


def defaults(gpu_memory_bytes: int, tp: int, version: str) -> tuple[int, int]:
    """SGLang's chunked_prefill_size and decode cuda-graph max batch size for a GPU of this size."""
    gpu_mb = gpu_memory_bytes / MIB
    rows = _CAPACITY_ROWS if parse_version(version) >= parse_version(CAPACITY_ROW_CHANGE) else _CAPACITY_ROWS_BEFORE_0_5_20
    for limit_gb, chunked, graph_bs, graph_bs_tp4 in rows:
        if gpu_mb < limit_gb * 1024:
            return chunked, graph_bs if tp < 4 else graph_bs_tp4
    return _CAPACITY_LARGEST


def prefill_graph_sizes(max_tokens: int) -> int:
    """How many prefill CUDA-graph sizes SGLang captures up to `max_tokens` (its capture list)."""
    steps = ((4, 33, 4), (48, 257, 16), (288, 513, 32), (576, 1025, 64), (1280, 4097, 256), (4608, max_tokens + 1, 512))
    return sum(1 for start, stop, step in steps for size in range(start, stop, step) if size <= max_tokens)


def vision_factor(vision_hidden_size: int | None) -> float:
    """The share of the fraction SGLang keeps for a multimodal model (image-encoder activations)."""
    if vision_hidden_size is None:
        return 1.0
    ratio = VISION_LAYERS_READ * vision_hidden_size ** 2 / (24 * 1024 ** 2)
    return VISION_FACTOR_BASE * max(0.8, min(1.05, 1.0 - 0.1 * (ratio - 1.0)))


def mem_fraction(gpu_memory_bytes: int, tp: int, version: str, vendor: str, vision_hidden_size: int | None,
                 speculative: bool) -> Figure:
    """SGLang's own default mem_fraction_static for this release, GPU and model (never more than it).

    reserved = 512 + 1.5 x max(chunked prefill, 2048) + tp/8 x 1024 + 2 x decode graph bs
    (+ 8 per prefill graph size), at least 10 GiB above 60 GB (+ 4 GiB for EAGLE before 0.5.19);
    fraction = round((total - reserved) / total, 3) x the vision factor. 0.5.23
    caps the decode graph bs at --max-running-requests; the uncapped bs is kept here, so the
    headroom is never less than the release's default for the command we pass. Rounded down.
    """
    gpu_mb = gpu_memory_bytes / MIB
    release = parse_version(version)
    chunked, graph_bs = defaults(gpu_memory_bytes, tp, version)
    rocm_without = vendor == "amd" and release >= parse_version(PREFILL_GRAPHS_OFF_ON_ROCM_FIRST)
    prefill_graphs = 0 if rocm_without else prefill_graph_sizes(chunked)
    reserved = 512 + 1.5 * max(chunked, 2048) + tp / 8 * 1024 + 2 * graph_bs + 8 * prefill_graphs
    terms = (f"512 + 1.5 x max({chunked} chunked prefill, 2048) + {tp}/8 x 1024 + 2 x {graph_bs} decode graph bs"
             + (f" + 8 x {prefill_graphs} prefill graphs" if prefill_graphs else "") + f" = {reserved:.0f} MiB")
    if gpu_mb > 60 * 1024 and reserved < RESERVE_FLOOR_MIB:
        reserved = RESERVE_FLOOR_MIB
        terms += " (raised to the 10 GiB floor above 60 GB)"
    if speculative and release < parse_version(SPEC_RESERVE_LAST_BEFORE):
        reserved += SPEC_RESERVE_MIB
        terms += f" + {SPEC_RESERVE_MIB} MiB for EAGLE"
    base = round((gpu_mb - reserved) / gpu_mb, 3)
    factor = vision_factor(vision_hidden_size)
    fraction = math.floor(base * factor * 1000) / 1000
    return Figure(
        "mem_fraction_static", fraction, "fraction",
        f"SGLang {version}'s default: reserved = {terms}; round(({gpu_mb:.0f} - {reserved:.0f}) / {gpu_mb:.0f}, 3) = {base}"
        + (f" x {factor:.4f} vision-tower factor (hidden {vision_hidden_size})" if factor != 1.0 else "")
        + f" = {fraction} (rounded down)",
    )


def mixin_sizing(version: str) -> bool:
    """Whether this release sizes its pools with ModelRunner's KV-cache mixin (up to 0.5.13.post1)."""
    return parse_version(version) <= parse_version(MIXIN_SIZING_LAST)


def radix_cache_off(version: str, mamba_strategy: str, disable_radix_cache: bool, draft_tokens: int) -> bool:
    """Whether the command turns the radix cache off: as chosen, or where the release refuses
    speculation with no_buffer under the mamba radix cache (0.5.13.post1 on CUDA; ROCm turns it off itself)."""
    return disable_radix_cache or (mamba_strategy == "no_buffer" and draft_tokens > 0 and mixin_sizing(version))


def slots_per_request(mamba_strategy: str, disable_radix_cache: bool) -> int:
    """State slots SGLang books per running request: 3 under the mamba radix cache, 2 more for
    extra_buffer's ping-pong buffers under the overlap scheduler, 1 without the radix cache."""
    if disable_radix_cache:
        return 1
    return 5 if mamba_strategy == "extra_buffer" else 3


def multimodal_reserve_bytes(vendor: str, nodes: int, version: str) -> float:
    """What a multimodal model keeps out of the KV budget for after-sizing allocations."""
    if mixin_sizing(version):
        return 0.0
    cuda_ipc = vendor == "nvidia" and nodes == 1 and parse_version(version) >= parse_version(MM_TRANSPORT_FLAG_FIRST)
    return VLM_CACHE_BYTES + (MM_FEATURE_CACHE_BYTES if cuda_ipc else 0)


def _estimated_running(kv_tokens: int, context_length: int) -> int:
    # SGLang's default when no --max-running-requests is given: 512 per context's worth of KV, in [2048, 4096].
    return max(min(int(kv_tokens / context_length * 512), 4096), 2048)


def size(candidate: Candidate) -> PoolSizing:
    """One replica's pools as SGLang's KV-cache configurator sizes them for the command we render.

    Follows 0.5.19-0.5.23's _profile_available_bytes / _handle_max_mamba_cache / resolve_max_num_reqs
    (checked by tests/planner/contract/test_engine_sizing.py): rest = static - weights -
    multimodal reserve; with the radix cache the state pool K takes rest x r/(1+r) (jointly with
    the speculative intermediate states), without it K is the running-request limit; every pool
    carries one padding slot; the KV pool is the remainder in whole pages. 0.5.13.post1's mixin
    differs as MIXIN_SIZING_LAST says. Without `vision_headroom` the fraction leaves out the
    release's vision-tower share (for a deployment the guides validated that does not fit
    otherwise; the caller says so).
    """
    c = candidate
    gpu_bytes, vendor, nodes, version, tp, context = c.gpu_bytes, c.vendor, c.nodes, c.version, c.tp, c.context
    weights_bytes, kv_per_token, state_per_slot, page_size = c.weights_bytes, c.kv_per_token, c.state_per_slot, c.page_size
    draft_tokens, requested_running, vision_headroom = c.draft_tokens, c.requested_running, c.vision_headroom
    mamba_strategy, vision_hidden_size = c.mamba_strategy, c.vision_hidden_size
    disable_radix_cache = radix_cache_off(version, mamba_strategy, c.disable_radix_cache, draft_tokens)
    mixin = mixin_sizing(version)
    padding = 0 if mixin else 1
    # The mixin sizes the target's KV alone; the draft worker allocates its own layers' pool beside it.
    budget_kv_per_token = kv_per_token - (c.draft_kv_per_token if mixin else 0.0)
    figures: list[Figure] = []
    fraction_figure = mem_fraction(gpu_bytes, tp, version, vendor, vision_hidden_size if vision_headroom else None,
                                   draft_tokens > 0)
    if not vision_headroom:
        fraction_figure = Figure(fraction_figure.name, fraction_figure.value, fraction_figure.unit,
                                 fraction_figure.equation + "; without the vision-tower share (validated by the guide)")
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
    padding_text = f" + {padding} padding" if padding else ""
    budget = rest * MAMBA_FULL_MEMORY_RATIO / (1 + MAMBA_FULL_MEMORY_RATIO)
    if disable_radix_cache:
        # The state pool is the running-request limit itself; pick that limit from the ratio split.
        by_split = int((budget - state_per_slot * (1 + draft_tokens) * padding) // (state_per_slot * (1 + draft_tokens)))
        split_tokens = int((rest - budget) // budget_kv_per_token)
        slots = max(0, min(cap or _estimated_running(split_tokens, context), split_tokens // 2, by_split))
        intermediate = state_per_slot * (slots + padding) * draft_tokens
        slots_equation = (f"radix cache off: the state pool is the running-request limit = min({cap or 'estimate'}, "
                          f"{human_bytes(budget)} (= rest x {MAMBA_FULL_MEMORY_RATIO}/(1+{MAMBA_FULL_MEMORY_RATIO})) "
                          f"// {human_bytes(state_per_slot * (1 + draft_tokens))}) = {slots}")
    else:
        if draft_tokens:
            slots = int((budget - state_per_slot * (1 + draft_tokens) * padding)
                        // (state_per_slot * (1 + draft_tokens / per_request)))
            held = min(max(1, cap), slots // per_request)
            intermediate = state_per_slot * (held + padding) * draft_tokens
        else:
            slots = int((budget - state_per_slot * padding) // state_per_slot)
            intermediate = 0.0
        slots_equation = (f"({human_bytes(budget)} (= rest x {MAMBA_FULL_MEMORY_RATIO}/(1+{MAMBA_FULL_MEMORY_RATIO}))"
                          + (" - one padding slot" if padding else "") + f") / {human_bytes(state_per_slot)}"
                          + (f" x (1 + {draft_tokens}/{per_request}) with the draft states" if draft_tokens else "")
                          + f" = {slots}")
    figures.append(Figure("state_slots", slots, "slots", slots_equation))
    if intermediate:
        figures.append(Figure("spec_intermediate_state_bytes", intermediate, "bytes",
                              f"(running{padding_text}) x {draft_tokens} draft tokens x {human_bytes(state_per_slot)} "
                              f"= {human_bytes(intermediate)}"))
    state_bytes = (slots + padding) * state_per_slot + intermediate
    tokens = max(0, int((rest - state_bytes) // budget_kv_per_token) // page_size * page_size)
    figures.append(Figure("kv_tokens", tokens, "tokens",
                          f"({human_bytes(rest)} - ({slots}{padding_text}) slots x {human_bytes(state_per_slot)}"
                          f"{' - draft states ' + human_bytes(intermediate) if intermediate else ''}) / "
                          f"{int(budget_kv_per_token)} B"
                          + (" (the draft's KV pool is allocated beside the budget)" if budget_kv_per_token != kv_per_token else "")
                          + f", in whole pages of {page_size} = {tokens}"))
    estimate = _estimated_running(tokens, context)
    # The configurator caps any limit by half the KV tokens; the mixin caps a requested one by the estimate.
    limits = {"the requested value" if requested_running else
              ("SGLang's speculation cap" if draft_tokens else "SGLang's estimate"): cap or estimate,
              **({"SGLang's estimate": estimate} if mixin and cap else {"KV tokens": tokens // 2}),
              "state slots": slots // per_request}
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
    if radix_cache_off(version, settings.mamba_strategy, settings.disable_radix_cache, settings.speculative_tokens):
        base.append("--disable-radix-cache")
        if not settings.disable_radix_cache:
            notes.append(f"SGLang {version} refuses speculation with mamba no_buffer under the radix cache: "
                         "--disable-radix-cache (or use --mamba-strategy extra_buffer)")
    elif settings.mamba_strategy == "no_buffer":
        # With the mamba radix cache on, no_buffer cannot run under the overlap scheduler: 0.5.19 to 0.5.23 (read in their
        # sources) refuse to start ("no_buffer do not support overlap schedule"); 0.5.13 turns
        # it off themselves.
        base.append("--disable-overlap-schedule")
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
