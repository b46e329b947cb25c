"""Plan the bundled runtime on the host CPU: the demo path, kept apart from the GPU solver.

The GPU catalog has no CPU entry and should not get a fake one: there is no tensor parallelism,
no KV-memory budget to solve and no engine reserve to model. A CPU plan is one `qwen35 serve
--device cpu` process with a modest context and concurrency that the user can raise.
"""
from __future__ import annotations

from qwen35.planner import memory
from qwen35.planner.engines import bundled
from qwen35.planner.engines.settings import ServeSettings
from qwen35.planner.errors import InputError
from qwen35.planner.figures import Figure, human_bytes
from qwen35.planner.models.registry import ResolvedModel
from qwen35.planner.models.tensors import tensor_groups
from qwen35.planner.plan import Parallel, Plan, PlanRequest
from qwen35.planner.solver import model_path, validate_request

CPU_TARGET = "cpu"
CPU_CONTEXT = 8192          # default context: enough for a demo chat, small enough for host memory
CPU_RUNNING_REQUESTS = 4    # default concurrency on a few CPU cores
FLOAT32_BYTES = 4
CPU_KV_PAGE = 16            # the runtime's KV page (runtime/engine/config.py DEFAULT_PAGE_SIZE)


def plan_cpu(request: PlanRequest, resolved: ResolvedModel) -> Plan:
    """A one-process plan for `qwen35 serve --device cpu` (float32 weights in host memory)."""
    validate_request(request, resolved)
    if request.engine != "bundled":
        raise InputError(f"the cpu target runs only the bundled runtime, not {request.engine}",
                         "use --engine bundled (engine.name: bundled in a profile)")
    if request.gpus_per_node != 1 or (request.nodes or 1) != 1:
        raise InputError("the cpu target is one process on one machine", "use count 1 and no --nodes")
    precision = request.precision or resolved.stored_precision
    if precision not in resolved.available_precisions or precision == "nvfp4":
        raise InputError(f"{resolved.name} has no {precision.upper()} checkpoint the CPU runtime can load",
                         f"try --precision {resolved.stored_precision if resolved.stored_precision != 'nvfp4' else 'bf16'}")
    version = bundled.resolve_version(request.engine_version)
    context = request.context_length or min(CPU_CONTEXT, resolved.config.text.max_position_embeddings)
    running = request.max_running_requests or CPU_RUNNING_REQUESTS
    spec_tokens = bundled.SPECULATIVE_TOKENS if request.strategy == "latency" else 0
    components = ("language", "vision", "mtp") if spec_tokens else ("language", "vision")
    weights = memory.summarize_weights(tensor_groups(resolved.config, "bf16", "fused"), components)
    # The CPU runtime computes in float32: twice the BF16 bytes, whatever the checkpoint stores.
    host_bytes = weights.total / 2 * FLOAT32_BYTES
    plan = Plan(request=request, model=resolved.name, model_path=model_path(resolved, precision),
                precision=precision, engine="bundled", engine_version=version, gpu=CPU_TARGET, fits=True,
                parallel=Parallel(tp=1, ep=1, dp=1, pp=1, nodes=1, gpus_per_node=1),
                context_length=context, max_running_requests=running, full_context_requests=running,
                mamba_strategy="no_buffer", page_size=1)
    # The CPU runtime's pools (runtime/engine/runner.py build_runner): every running request a full
    # context of whole KV pages, one state slot each.
    kv_tokens = running * -(-context // CPU_KV_PAGE) * CPU_KV_PAGE
    plan.memory = {"weights_total_bytes": weights.total, "host_weights_bytes": host_bytes,
                   "kv_tokens": kv_tokens, "state_slots": running}
    plan.figures = [Figure("host_weights_bytes", host_bytes, "bytes",
                           f"{human_bytes(weights.total)} of BF16 weights x 2 for float32 = {human_bytes(host_bytes)}")]
    plan.reasons = ["cpu target: one bundled-runtime process in float32; no GPU memory to plan"]
    if not request.context_length:
        plan.reasons.append(f"context {context}: the CPU default (raise it with --context-length)")
    if not request.max_running_requests:
        plan.reasons.append(f"{running} running requests: the CPU default (raise it with --max-running-requests)")
    if spec_tokens:
        plan.speculative = {"method": "mtp", "draft_tokens": spec_tokens}
    settings = ServeSettings(
        model_path=plan.model_path, served_model_name=request.served_model_name or resolved.name,
        host=request.host, port=request.port, tp=1, ep=1, dp=1, nodes=1, gpus_per_node=1,
        context_length=context, max_running_requests=running, mem_fraction=0.0, precision=precision,
        vendor=CPU_TARGET, arch=CPU_TARGET, page_size=1, mamba_strategy="no_buffer",
        disable_radix_cache=False, mamba_ssm_dtype=request.mamba_ssm_dtype, speculative_tokens=spec_tokens,
        multithread_load=False, allreduce_fusion=False, dist_init_addr=None,
    )
    plan.engine_settings = {k: v for k, v in settings.__dict__.items() if k != "extra_args"}
    plan.commands, notes = bundled.render(settings, version)
    plan.warnings += notes
    return plan
