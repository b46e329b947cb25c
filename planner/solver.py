"""Pick a deployment: the smallest valid tensor-parallel size whose memory holds the context asked for."""
from __future__ import annotations

import math
from dataclasses import dataclass

from qwen35.planner import memory
from qwen35.planner.documented import documented_tp
from qwen35.planner.engines import engine_module
from qwen35.planner.engines.settings import Candidate, ServeSettings
from qwen35.planner.errors import InputError
from qwen35.planner.figures import Figure, human_bytes
from qwen35.planner.hardware.catalog import GpuModel
from qwen35.planner.models.registry import REGISTRY, ResolvedModel
from qwen35.planner.models.tensors import tensor_groups
from qwen35.planner.parallel import TpChoice, forced_choices, tp_choices
from qwen35.planner.plan import ENGINES, MAMBA_STRATEGIES, STRATEGIES, Parallel, Plan, PlanRequest

CONTEXT_STEPS = (262144, 196608, 131072)
THINKING_MIN_CONTEXT = 131072
# A replica that runs fewer requests at once than this is a poor deployment while a larger tp runs more.
BALANCED_MIN_RUNNING = 8
LARGE_CHECKPOINT_BYTES = 100 * 10**9


@dataclass(frozen=True)
class Sizing:
    """The memory outcome of one (tp, context) candidate on one GPU."""

    fits: bool
    context_length: int
    max_running: int
    full_context: int
    mem_fraction: float
    figures: list[Figure]
    memory: dict[str, float]
    shortfall: str
    binding: str  # which limit sets the running requests: KV tokens, state slots, or the value asked for


def model_path(resolved: ResolvedModel, precision: str) -> str:
    """What the engine is pointed at: the local directory, else the hub id of that precision."""
    if resolved.local_path:
        return str(resolved.local_path)
    entry = next(e for e in REGISTRY if e.name == resolved.name)
    return dict(entry.hub_ids)[precision]


def choose_precision(request: PlanRequest, resolved: ResolvedModel, gpu: GpuModel) -> str:
    """The precision to plan for, or an InputError saying why the one asked for cannot run."""
    precision = request.precision or resolved.stored_precision
    if precision not in resolved.available_precisions:
        raise InputError(
            f"{resolved.name} has no {precision.upper()} checkpoint "
            f"(available: {', '.join(resolved.available_precisions)})",
            f"try --precision {resolved.available_precisions[0]}",
        )
    # The engines' NVFP4 MoE kernels target datacenter Blackwell (sm100/sm103).
    if precision == "nvfp4" and (gpu.fp4 != "nvfp4" or gpu.arch not in ("sm100", "sm103")):
        extra = " (it has MXFP4, a different format)" if gpu.fp4 == "mxfp4" else ""
        raise InputError(
            f"NVFP4 needs Blackwell GPUs (B200, B300, GB200); {gpu.key} has no NVFP4 support{extra}",
            "try --precision fp8 or --gpu B200:4",
        )
    if precision == "fp8" and not gpu.fp8:
        raise InputError(f"{gpu.key} has no FP8 support", "try --precision bf16 or an H100/H200/B200")
    engine = engine_module(request.engine)
    if precision not in engine.PRECISIONS:
        raise InputError(f"{engine.NAME} cannot run {precision.upper()} checkpoints",
                         f"try another --engine, or --precision {engine.PRECISIONS[-1]}")
    return precision


def validate_request(request: PlanRequest, resolved: ResolvedModel) -> None:
    """Reject malformed requests with exit code 2 before any arithmetic."""
    if request.engine not in ENGINES:
        raise InputError(f"unknown engine '{request.engine}'", f"choose one of {', '.join(ENGINES)}")
    if request.strategy not in STRATEGIES:
        raise InputError(f"unknown strategy '{request.strategy}'", f"choose one of {', '.join(STRATEGIES)}")
    if request.mamba_strategy not in (None, *MAMBA_STRATEGIES):
        raise InputError(f"unknown mamba strategy '{request.mamba_strategy}'",
                         f"choose one of {', '.join(MAMBA_STRATEGIES)}")
    if request.gpus_per_node < 1:
        raise InputError(f"GPU count must be at least 1, got {request.gpus_per_node}", "try --gpu H100:8")
    if request.nodes is not None and request.nodes < 1:
        raise InputError(f"--nodes must be at least 1, got {request.nodes}", "try --nodes 2")
    if request.max_running_requests is not None and request.max_running_requests < 1:
        raise InputError(f"--max-running-requests must be at least 1, got {request.max_running_requests}",
                         "omit it to let the planner choose")
    maximum = resolved.config.text.max_position_embeddings
    if request.context_length is not None:
        if request.context_length < 1:
            raise InputError(f"--context-length must be positive, got {request.context_length}",
                             f"try --context-length {THINKING_MIN_CONTEXT}")
        if request.context_length > maximum:
            raise InputError(f"--context-length {request.context_length} exceeds {resolved.name}'s maximum of {maximum}",
                             f"use at most --context-length {maximum}")


def _size(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel, summary: memory.WeightSummary, choice: TpChoice,
          context: int, mamba: tuple[str, int, bool, list[str]], spec_tokens: int, version: str,
          vision_headroom: bool = True) -> Sizing:
    """Memory arithmetic for one candidate: does `context` fit with at least the requests asked for?"""
    text = resolved.config.text
    gpu_bytes = request.gpu_memory_bytes or gpu.memory_bytes
    weights = memory.weights_per_gpu(summary, text, choice.tp)
    # NVFP4 checkpoints ship FP8 KV-cache scales: the engine keeps the KV cache in FP8.
    kv_dtype = "fp8_e4m3" if request.precision == "nvfp4" or resolved.stored_precision == "nvfp4" else "bf16"
    extra_kv_layers = text.mtp_num_hidden_layers if spec_tokens else 0
    kv_token = memory.kv_bytes_per_token(text, choice.tp, kv_dtype, extra_kv_layers)
    draft_kv = kv_token.value - memory.kv_bytes_per_token(text, choice.tp, kv_dtype).value
    state = memory.state_bytes_per_slot(text, choice.tp, request.mamba_ssm_dtype)
    strategy, page_size, disable_radix, _ = mamba
    pools = engine_module(request.engine).size(Candidate(
        gpu_bytes=gpu_bytes, vendor=gpu.vendor, nodes=max(1, math.ceil(choice.tp / request.gpus_per_node)),
        version=version, tp=choice.tp, context=context, weights_bytes=weights.value, kv_per_token=kv_token.value,
        state_per_slot=state.value, page_size=page_size, mamba_strategy=strategy, disable_radix_cache=disable_radix,
        draft_tokens=spec_tokens, requested_running=request.max_running_requests,
        vision_hidden_size=resolved.config.vision.hidden_size if resolved.config.vision else None,
        vision_headroom=vision_headroom, draft_kv_per_token=draft_kv, arch=gpu.arch, kv_dtype=kv_dtype,
        attention_layers=len(text.full_attention_layer_ids) + extra_kv_layers,
        linear_layers=len(text.linear_attention_layer_ids),
        conv_bytes_per_step=memory.conv_bytes_per_step(text, choice.tp)))
    fraction, static, per_request = pools.mem_fraction, pools.static_bytes, pools.slots_per_request
    kv_tokens, slots, running, binding = pools.kv_tokens, pools.state_slots, pools.max_running, pools.binding
    figures = [weights, kv_token, state] + pools.figures
    full = memory.full_context_requests(max(kv_tokens, 0), context, slots, per_request)
    figures.append(full)
    shortfall = ""
    if weights.value >= static:
        shortfall = f"weights {human_bytes(weights.value)} per GPU exceed the {human_bytes(static)} static budget"
    elif kv_tokens < context:
        shortfall = f"KV pool of {kv_tokens} tokens cannot hold one {context}-token request"
    elif running < 1:
        shortfall = "no room for a single request's linear-attention state"
    elif request.max_running_requests and running < request.max_running_requests:
        shortfall = f"only {running} of the {request.max_running_requests} requested concurrent requests fit"
    mem = {
        "gpu_memory_bytes": gpu_bytes,
        "weights_per_gpu_bytes": weights.value,
        "kv_bytes_per_token_per_gpu": kv_token.value,
        "state_bytes_per_request_per_gpu": state.value,
        "state_slots_per_request": per_request,
        "static_bytes": static,
        "kv_tokens": kv_tokens,
        "state_slots": slots,
    }
    if pools.block_tokens:
        mem |= {"block_tokens": pools.block_tokens, "block_pool_bytes": pools.block_pool_bytes}
    return Sizing(not shortfall, context, running, full.value, fraction, figures, mem, shortfall, binding)


def _contexts(request: PlanRequest) -> tuple[int, ...]:
    if request.context_length is not None:
        return (request.context_length,)
    return CONTEXT_STEPS


def _candidates(request: PlanRequest, choices: list[TpChoice]):
    """(tp, context) in the order they are tried: the context kept while tp grows, except for throughput,
    which keeps the smallest tp (the most replicas) and shortens the context first."""
    if request.strategy == "throughput":
        return [(choice, context) for choice in choices for context in _contexts(request)]
    return [(choice, context) for context in _contexts(request) for choice in choices]


def _search(request, gpu, resolved, weights, choices, mamba, spec_tokens, version, vision_headroom=True):
    """First (tp, context) that fits in the strategy's order; plus every miss, the largest tp last.

    Outside the throughput strategy a fit whose replica runs fewer than BALANCED_MIN_RUNNING requests is
    passed over while a larger tp at the same context runs more; when none reaches the floor, the fit
    running the most requests over the node wins (the smaller tp on a tie).
    """
    misses, thin = [], []
    for choice, context in _candidates(request, choices):
        if thin and context != thin[0][1].context_length:
            break  # every tp at the thin fits' context was tried: keep that context
        sizing = _size(request, gpu, resolved, weights, choice, context, mamba, spec_tokens, version,
                       vision_headroom)
        if not sizing.fits:
            misses.append((choice, sizing))
        elif (sizing.max_running >= BALANCED_MIN_RUNNING or request.strategy == "throughput"
              or request.max_running_requests is not None):
            if thin and _node_running(request, choice, sizing) <= max(_node_running(request, *fit) for fit in thin):
                break  # a larger tp that runs no more over the node is no better than the thin fits
            return choice, sizing, misses
        else:
            thin.append((choice, sizing))
    if thin:
        return (*max(thin, key=lambda fit: (_node_running(request, *fit), -fit[0].tp)), misses)
    misses.sort(key=lambda miss: miss[0].tp)
    return None, None, misses


def _replicas(request: PlanRequest, tp: int) -> int:
    """Data-parallel replicas of tp in the node: what the plan runs unless --dp says otherwise."""
    if request.dp:
        return request.dp
    engine = engine_module(request.engine)
    return 1 if not engine.DATA_PARALLEL or tp >= request.gpus_per_node else request.gpus_per_node // tp


def _node_running(request: PlanRequest, choice: TpChoice, sizing: Sizing) -> int:
    return sizing.max_running * _replicas(request, choice.tp)


_WEIGHTS: dict[tuple, tuple[ResolvedModel, memory.WeightSummary]] = {}


def _weights(resolved: ResolvedModel, precision: str, layout: str, components: tuple[str, ...]) -> memory.WeightSummary:
    """The weight summary of one checkpoint, counted once: every way out re-plans the same model."""
    key = (id(resolved), precision, layout, components)
    cached = _WEIGHTS.get(key)
    if cached is None or cached[0] is not resolved:
        if len(_WEIGHTS) >= 64:
            _WEIGHTS.clear()
        cached = _WEIGHTS[key] = (resolved, memory.summarize_weights(
            tensor_groups(resolved.config, precision, layout), components))
    return cached[1]


def solve(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel) -> Plan:
    """Solve a plan; `fits` is False, with ways out that were each re-planned and fit, when nothing holds the model."""
    from qwen35.planner.ways_out import find_ways_out

    plan = plan_once(request, gpu, resolved)
    if not plan.fits:
        plan.ways_out = find_ways_out(request, gpu, resolved, plan.precision)
    return plan


def plan_once(request: PlanRequest, gpu: GpuModel, resolved: ResolvedModel) -> Plan:
    """Solve one request as given, without looking for ways out of a miss."""
    validate_request(request, resolved)
    precision = choose_precision(request, resolved, gpu)
    text = resolved.config.text
    engine = engine_module(request.engine)
    version = engine.resolve_version(request.engine_version)
    spec_tokens = engine.SPECULATIVE_TOKENS if request.strategy == "latency" else 0
    load_precision = engine.weights_precision(precision)
    # Byte counts are layout-independent: the fused layout is the quick one to enumerate.
    layout = "per_expert" if load_precision == "nvfp4" else "fused"
    components = ("language", "vision", "mtp") if spec_tokens else ("language", "vision")
    # MTP weights are only loaded when speculation drafts with them.
    weights = _weights(resolved, load_precision, layout, components)
    stored_layout = "per_expert" if precision == "nvfp4" else "fused"
    stored = _weights(resolved, precision, stored_layout, ("language", "vision", "mtp"))
    plan = Plan(request=request, model=resolved.name, model_path=model_path(resolved, precision),
                precision=precision, engine=request.engine, engine_version=version, gpu=gpu.key, fits=False)
    plan.memory["weights_total_bytes"] = stored.total
    for component, size in stored.by_component.items():
        plan.memory[f"weights_{component}_bytes"] = size
    if resolved.index_total_size:
        # A local checkpoint's own index says how many tensor bytes it holds: cross-check the count.
        plan.memory["checkpoint_index_total_size_bytes"] = resolved.index_total_size
        if abs(resolved.index_total_size - stored.total) > 0.01 * stored.total:
            plan.warnings.append(
                f"the checkpoint's index lists {human_bytes(resolved.index_total_size)} of tensors, but its config "
                f"implies {human_bytes(stored.total)}: the plan's memory figures may be off")
    if load_precision != precision:
        plan.reasons.append(f"{engine.NAME} dequantises {precision.upper()} weights to {load_precision.upper()} at load")

    mamba = engine.mamba_choice(gpu.vendor, request.mamba_strategy, request.strategy)
    # Tensor parallelism all-reduces every layer: over PCIe machines on Ethernet that is no deployment.
    across_nodes = None if gpu.tp_across_nodes else f"{gpu.key} GPUs link over {gpu.interconnect}, not NVLink or Infinity Fabric"
    max_gpus = engine.max_gpus(request.gpus_per_node, request.nodes)
    choices, skipped = tp_choices(text, precision, max_gpus, request.gpus_per_node, across_nodes)
    choices = forced_choices(text, precision, choices, skipped, request.tp, request.ep, max_gpus)
    _check_dp(request, engine, choices)
    follows_guide = engine.FOLLOWS_DEPLOYMENT_GUIDE and request.tp is None
    documented = documented_tp(resolved.name, gpu.key, precision) if follows_guide else None
    if documented:
        memory_choice, _, _ = _search(request, gpu, resolved, weights, choices, mamba, spec_tokens, version)
        choices = [c for c in choices if c.tp >= documented]
    choice, sizing, misses = _search(request, gpu, resolved, weights, choices, mamba, spec_tokens, version)
    # The guide's tp may have been passed over although it fits (its replicas run too few requests).
    guide_passed_over = bool(documented and choice is not None and choices and choices[0].tp == documented
                             and choice.tp > documented
                             and _size(request, gpu, resolved, weights, choices[0], sizing.context_length, mamba,
                                       spec_tokens, version).fits)
    if (documented and choices and choices[0].tp == documented and (choice is None or choice.tp > documented)
            and not guide_passed_over):
        # The guide's size does not fit with the release's whole default headroom: it was validated
        # without the vision-tower share, which is then the headroom given up (said in the warnings).
        guided, guided_sizing, _ = _search(request, gpu, resolved, weights, choices[:1], mamba, spec_tokens, version,
                                           vision_headroom=False)
        if guided is not None and (choice is None or guided_sizing.context_length >= sizing.context_length):
            default = _size(request, gpu, resolved, weights, guided, guided_sizing.context_length, mamba,
                            spec_tokens, version)
            given_up = guided_sizing.memory["static_bytes"] - default.memory["static_bytes"]
            plan.warnings.append(
                f"--mem-fraction-static {guided_sizing.mem_fraction:.3f} is above {engine.NAME} {version}'s default of "
                f"{default.mem_fraction:.3f} for this model: the deployment guide's tp {documented} on {gpu.key} at "
                f"{precision.upper()} does not fit otherwise, so the vision tower's share of the headroom "
                f"({human_bytes(given_up)} per GPU) is given up: keep images small")
            choice, sizing = guided, guided_sizing
    if documented and choice is not None:
        if choice.tp > documented:
            if not guide_passed_over:  # passed over: _explain_context_kept says why
                plan.reasons.append(f"tp {choice.tp}: the deployment guide's tp {documented} for {resolved.name} on "
                                    f"{gpu.key} at {precision.upper()} does not fit memory at this context")
        elif memory_choice and memory_choice.tp < documented:
            plan.reasons.append(
                f"tp {documented}: the deployment guide's validated size for {resolved.name} on {gpu.key} at "
                f"{precision.upper()}; memory alone would allow tp {memory_choice.tp}")
        else:
            plan.reasons.append(f"tp {documented}: matches the deployment guide for {resolved.name} on {gpu.key} at {precision.upper()}")
    if choice is None:
        if documented and not choices:
            plan.reasons.append(f"the deployment guide runs {resolved.name} at {precision.upper()} on {gpu.key} with "
                                f"tp {documented}, more GPUs than the plan may use")
        return _no_fit(plan, request, misses, skipped)

    plan.fits = True
    plan.reasons += [f"skipped {why}" for tp, why in skipped if tp < choice.tp]
    nodes = max(1, math.ceil(choice.tp / request.gpus_per_node))
    dp = _replicas(request, choice.tp)
    plan.parallel = Parallel(tp=choice.tp, ep=choice.ep, dp=dp, pp=1, nodes=nodes,
                             gpus_per_node=min(request.gpus_per_node, choice.tp * dp))
    plan.context_length = sizing.context_length
    plan.max_running_requests = sizing.max_running * dp
    plan.full_context_requests = sizing.full_context * dp
    plan.mem_fraction_static = round(sizing.mem_fraction, 3)
    plan.figures = sizing.figures
    plan.memory.update(sizing.memory)
    strategy, page_size, disable_radix, mamba_reasons = mamba
    plan.mamba_strategy = strategy
    plan.page_size = page_size
    plan.reasons += mamba_reasons
    _explain_choices(plan, request, engine, choice, sizing, nodes, dp)
    _explain_context_kept(plan, request, gpu, resolved, weights, choices, choice, sizing, mamba, spec_tokens, version)
    if spec_tokens:
        plan.speculative = {"method": "mtp", "draft_tokens": spec_tokens}
        plan.reasons.append(f"latency strategy: MTP speculative decoding with {spec_tokens} draft tokens")
    settings = ServeSettings(
        model_path=plan.model_path, served_model_name=request.served_model_name or resolved.name,
        host=request.host, port=request.port, tp=choice.tp, ep=choice.ep, dp=dp, nodes=nodes,
        gpus_per_node=request.gpus_per_node, context_length=sizing.context_length,
        max_running_requests=sizing.max_running,
        mem_fraction=sizing.mem_fraction, precision=precision, vendor=gpu.vendor, arch=gpu.arch,
        page_size=page_size, mamba_strategy=strategy, disable_radix_cache=disable_radix,
        mamba_ssm_dtype=request.mamba_ssm_dtype, speculative_tokens=spec_tokens,
        multithread_load=plan.memory["weights_total_bytes"] > LARGE_CHECKPOINT_BYTES,
        allreduce_fusion=gpu.key == "B200" and precision == "fp8" and nodes == 1,
        dist_init_addr=request.dist_init_addr,
    )
    plan.engine_settings = {k: v for k, v in settings.__dict__.items() if k != "extra_args"}
    commands, notes = engine.render(settings, version)
    plan.commands = commands
    plan.warnings += notes
    return plan


def _check_dp(request: PlanRequest, engine, choices: list[TpChoice]) -> None:
    """Refuse a --dp the engine or the node cannot run (replicas stay inside one node)."""
    if request.dp is None:
        return
    if request.dp < 1:
        raise InputError(f"--dp must be at least 1, got {request.dp}", "omit it to let the planner choose")
    if request.dp > 1 and not engine.DATA_PARALLEL:
        raise InputError(f"--dp {request.dp} refused: {engine.NAME} runs one replica per process", "omit --dp")
    fitting = [choice for choice in choices if choice.tp * request.dp <= request.gpus_per_node]
    if request.dp > 1 and not fitting:
        smallest = choices[0].tp if choices else 1
        raise InputError(f"--dp {request.dp} refused: {request.dp} replicas of tp {smallest} need "
                         f"{request.dp * smallest} GPUs in a node of {request.gpus_per_node}",
                         f"try --dp {max(1, request.gpus_per_node // smallest)} or more GPUs per node")
    choices[:] = fitting if request.dp > 1 else choices


def _explain_choices(plan: Plan, request: PlanRequest, engine, choice: TpChoice, sizing: Sizing, nodes: int,
                     dp: int) -> None:
    used = choice.tp * dp
    if request.tp:
        plan.reasons.append(f"tp {choice.tp}: as asked (--tp {choice.tp})")
    if choice.why_ep:
        plan.reasons.append(choice.why_ep)
    if nodes > 1:
        plan.reasons.append(f"tp {choice.tp} spans {nodes} nodes of {request.gpus_per_node} GPUs: one node's GPUs cannot hold the weights")
    if request.dp:
        plan.reasons.append(f"dp {dp}: as asked (--dp {dp})")
    elif dp > 1 and used == request.gpus_per_node:
        plan.reasons.append(f"dp {dp}: {dp} replicas of tp {choice.tp} fill the {request.gpus_per_node} GPUs of the node")
    if nodes == 1 and used < request.gpus_per_node:
        idle = request.gpus_per_node - used
        why = f"another replica needs {choice.tp} more" if engine.DATA_PARALLEL else f"{engine.NAME} runs one replica per process"
        plan.reasons.append(f"{idle} of {request.gpus_per_node} GPUs idle: {dp} replica{'s' if dp > 1 else ''} of tp "
                            f"{choice.tp} use{'' if dp > 1 else 's'} {used}; {why}")
    per_replica = " per replica" if dp > 1 else ""
    plan.reasons.append(f"{sizing.max_running} running requests{per_replica}: bound by {sizing.binding}")
    if request.context_length is None and sizing.context_length < CONTEXT_STEPS[0]:
        plan.warnings.append(f"context reduced from {CONTEXT_STEPS[0]} to {sizing.context_length} to fit memory")
    if sizing.context_length < THINKING_MIN_CONTEXT:
        plan.warnings.append(f"context {sizing.context_length} is below {THINKING_MIN_CONTEXT}: thinking mode needs at least 128K tokens")


def _explain_context_kept(plan, request, gpu, resolved, weights, choices, choice, sizing, mamba, spec_tokens,
                          version) -> None:
    """Say so when tp grew past a smaller tp that runs too few requests, or to keep the context that a smaller
    tp would have shortened."""
    if request.strategy == "throughput":
        return
    smaller = [c for c in choices if c.tp < choice.tp]
    for candidate in smaller:
        thin = _size(request, gpu, resolved, weights, candidate, sizing.context_length, mamba, spec_tokens, version)
        if thin.fits:
            passed_over = (f"tp {choice.tp}: tp {candidate.tp} runs only {thin.max_running} requests per replica at "
                           f"{sizing.context_length} tokens ({_node_running(request, candidate, thin)} over the node, "
                           f"against {_node_running(request, choice, sizing)})")
            if sizing.max_running >= BALANCED_MIN_RUNNING:
                plan.reasons.append(f"{passed_over}; the {request.strategy} strategy passes over replicas of fewer "
                                    f"than {BALANCED_MIN_RUNNING} while a larger tp runs more")
            else:
                plan.reasons.append(f"{passed_over}; no tp here runs {BALANCED_MIN_RUNNING} per replica, so the "
                                    f"{request.strategy} strategy takes the one that runs the most over the node")
            return
    if request.context_length is not None:
        return
    shorter = [context for context in CONTEXT_STEPS if context < sizing.context_length]
    for candidate in smaller:
        for context in shorter:
            if _size(request, gpu, resolved, weights, candidate, context, mamba, spec_tokens, version).fits:
                plan.reasons.append(
                    f"tp {choice.tp}: keeps the context at {sizing.context_length} ({request.strategy} strategy); "
                    f"tp {candidate.tp} holds only {context} tokens (--strategy throughput takes that, for more replicas)")
                return


def _no_fit(plan: Plan, request: PlanRequest, misses, skipped: list[tuple[int, str]]) -> Plan:
    plan.fits = False
    if misses:
        choice, sizing = misses[-1]
        plan.reasons.append(f"largest candidate tp {choice.tp} at context {sizing.context_length}: {sizing.shortfall}")
        plan.figures = sizing.figures
        plan.memory.update(sizing.memory)
    else:
        plan.reasons.append("no tensor-parallel size is valid for this model within the GPUs given")
    if request.nodes is None:
        plan.reasons.append(f"planned for one node of {request.gpus_per_node} x {plan.gpu}: pass --nodes N to plan across nodes")
    plan.reasons += [f"skipped {why}" for _, why in skipped]
    return plan
