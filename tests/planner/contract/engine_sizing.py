"""Run an SGLang release's own start-up checks and pool sizing on CPU, for the commands we emit.

The release is installed as the parser harness installs it (``engine_cli``), with the larger
set of light packages that server-args resolution and the KV-cache configurator import. A
child process (this file run as a script) fakes one CUDA or ROCm device of the plan's GPU
and, for each case:

1. parses the argv and runs ``ServerArgs.resolve_once()``: the release's whole resolution
   pipeline, including its start-up validation (an ``AssertionError`` or ``ValueError``
   there is what a real launch stops with);
2. publishes the resolved arguments as the scheduler of replica 0, rank 0 would;
3. builds the release's ``ModelConfig`` from the checkpoint's ``config.json`` and its
   ``KVCacheConfigurator``, and calls ``_resolve_memory_pool_config``: the memory profile
   (free memory after the weights, minus the non-static slack and the multimodal
   reservation), the mamba pool size, the KV token capacity and the running-request limit.

What is faked, and the assumptions the figures carry:

- The device: ``torch.cuda`` answers as ``count`` GPUs of the plan's kind with that total
  memory and compute capability (``torch.version.hip`` set for AMD, and a ``rocminfo`` on
  ``PATH`` that lists the pools SGLang reads AMD memory from). Nothing is allocated.
- Memory before load (``pre_load_bytes``): the caller's figure; the free memory after load
  is that minus the weights one GPU holds (``weights_bytes``, from our tensor inventory,
  as the real loader would leave it). Transient load buffers are taken as freed.
- Post-capture KV resizing (when the release enables it) is read from the configurator's
  own flag but the CUDA-graph capture it measures cannot run: the sizing is the pre-capture one.
- Modules the configurator imports for kernels (``triton``, ``torchvision``, ``sgl_kernel``, ``aiter``)
  are import-only stand-ins, as in ``engine_cli``; no sizing code calls them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve()
GIB = 1 << 30


@dataclass(frozen=True)
class Device:
    """The GPU the child pretends to have: per-device total memory, capability, vendor, count."""

    total_bytes: int
    capability: tuple[int, int]
    vendor: str  # "nvidia" | "amd"
    count: int
    name: str


@dataclass(frozen=True)
class SizingCase:
    """One command to check: its argv (after the program), the checkpoint config and the memory it starts with."""

    argv: list[str]
    config: dict
    device: Device
    weights_bytes: int
    pre_load_bytes: int
    env: dict[str, str] = field(default_factory=dict)


def sglang_sizing(version: str, cases: list[SizingCase], root: Path | None = None) -> list[dict]:
    """Each case's outcome: {"error": message} or the release's resolved sizing figures."""
    from .engine_cli import _ask_child, ensure_sglang_sizing

    target = ensure_sglang_sizing(version, root)
    # The release reads the vendor and compute capability once, while importing: one child per kind.
    by_kind: dict[tuple, list[int]] = {}
    for index, case in enumerate(cases):
        by_kind.setdefault((case.device.vendor, case.device.capability), []).append(index)
    results: list[dict] = [{}] * len(cases)
    for indices in by_kind.values():
        payload = [{"argv": cases[i].argv, "config": cases[i].config, "device": cases[i].device.__dict__,
                    "weights_bytes": cases[i].weights_bytes, "pre_load_bytes": cases[i].pre_load_bytes,
                    "env": cases[i].env} for i in indices]
        answers = _ask_child("sglang-sizing", target, {"mode": "sizing", "version": version, "cases": payload}, script=_HERE)
        for index, answer in zip(indices, answers):
            results[index] = answer
    return results


# --- the child (this file run as a script) -------------------------------------------------


class _FakeMemory:
    """What the fake device reports; set per case before the release reads it."""

    total = 0
    free = 0


def _fake_device(device: dict) -> None:
    import types

    import torch

    capability = tuple(device["capability"])
    props = types.SimpleNamespace(name=device["name"], major=capability[0], minor=capability[1],
                                  multi_processor_count=132, gcnArchName="gfx942")
    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda.is_initialized = lambda: True  # SGLang then asks torch for the capability instead of NVML
    cuda.device_count = lambda: device["count"]
    cuda.current_device = lambda: 0
    cuda.set_device = lambda _device: None
    cuda.get_device_capability = lambda _device=None: capability
    cuda.get_device_name = lambda _device=None: device["name"]

    def properties(_device=None):
        props.total_memory = _FakeMemory.total
        return props

    cuda.get_device_properties = properties
    cuda.mem_get_info = lambda _device=None: (_FakeMemory.free, _FakeMemory.total)
    if device["vendor"] == "amd":
        torch.version.hip = "6.3"
        torch.version.cuda = None
    else:
        torch.version.cuda = "12.8"
        torch.version.hip = None


def _skip_fakes_of_missing_ops() -> None:
    """Up to 0.5.13.post1 the MoE top-k module registers fake (meta) kernels for sgl_kernel's ops at
    import; the stand-in sgl_kernel defines no ops, so such a registration passes the function through."""
    import torch

    register_fake = torch.library.register_fake

    def tolerant(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("sgl_kernel::"):
            namespace, name = op.split("::")
            if not hasattr(getattr(torch.ops, namespace), name):
                return lambda function=None: function
        return register_fake(op, *args, **kwargs)

    torch.library.register_fake = tolerant


def _fake_rocminfo(scratch: Path, device: dict) -> None:
    """SGLang reads an AMD GPU's memory from `rocminfo` (pool sizes in KB), not from torch."""
    tools = scratch / "bin"
    tools.mkdir(exist_ok=True)
    pool = f"  Pool 1\n    Segment: GLOBAL; FLAGS: COARSE GRAINED\n    Size: {device['total_bytes'] // 1024}(0x0) KB\n"
    agents = "".join(f"  Name: gfx942\n{pool}" for _ in range(device["count"]))
    script = tools / "rocminfo"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{agents}EOF\n")
    script.chmod(0o755)
    os.environ["PATH"] = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"


def _load_engine_cli():
    spec = importlib.util.spec_from_file_location("qwen35_engine_cli", _HERE.with_name("engine_cli.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _size_one(case: dict, scratch: Path, version: str) -> dict:
    model_dir = scratch / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(case["config"]))
    argv = list(case["argv"])
    argv[argv.index("--model-path") + 1] = str(model_dir)
    os.environ.update(case["env"])
    if case["device"]["vendor"] == "amd":
        _fake_rocminfo(scratch, case["device"])
    _FakeMemory.total = case["device"]["total_bytes"]
    _FakeMemory.free = case["pre_load_bytes"]
    after_load_gib = (case["pre_load_bytes"] - case["weights_bytes"]) / GIB
    pre_load_gib = case["pre_load_bytes"] / GIB

    return _adapter(version)(argv, pre_load_gib, after_load_gib)


def _resolved_args(argv: list[str], resolve_once: bool):
    """The release's ServerArgs with its start-up validation run, or the message it stops with.

    Up to 0.5.13.post1 the whole resolution runs in ServerArgs.__post_init__; later in resolve_once().
    """
    from sglang.srt.server_args import prepare_server_args

    try:
        server_args = prepare_server_args(argv)
        if resolve_once:
            server_args.resolve_once()
    except (AssertionError, ValueError, RuntimeError) as error:
        return None, {"error": f"{type(error).__name__}: {error}", "stage": "server_args"}
    return server_args, None


def _adapter(version: str):
    """The release's own pool-sizing entry points, by where that release keeps them."""
    return _ADAPTERS[_family(version)]


def _family(version: str) -> str:
    """The oldest release whose sizing code (names, signatures, module) this release shares."""
    from packaging.version import Version

    return max((first for first in _ADAPTERS if Version(first) <= Version(version)), key=Version)


def _figures(config, schedule, ratio: int, post_capture: bool, per_request_bytes: int) -> dict:
    return {
        "error": None,
        "max_total_num_tokens": int(config.max_total_num_tokens),
        "max_running_requests": int(config.max_running_requests),
        "max_mamba_cache_size": int(schedule.max_mamba_cache_size),
        "mamba_slots_per_request": int(ratio),
        "mem_fraction_static": float(schedule.mem_fraction_static),
        "page_size": int(schedule.page_size),
        "disable_overlap_schedule": bool(schedule.disable_overlap_schedule),
        "post_capture_kv_active": bool(post_capture),
        "mamba_cache_per_request_bytes": int(per_request_bytes),
    }


def _pool_error(error: Exception, fraction) -> dict:
    # The resolved fraction still says what the release would have started with.
    return {"error": f"{type(error).__name__}: {error}", "stage": "memory_pool", "mem_fraction_static": float(fraction)}


def _configurator_inputs(server_args, model_config) -> dict:
    """What 0.5.19 to 0.5.23's model runner hands its KVCacheConfigurator, for a target worker on rank 0."""
    import torch

    from sglang.srt.model_executor.model_runner_components.layer_setup import ModelLayerInfo
    from sglang.srt.model_executor.model_runner_components.spec_aux_hidden_state import SpecAuxHiddenStateConfig
    from sglang.srt.runtime_context import get_schedule
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    algorithm = SpeculativeAlgorithm.from_string(server_args.speculative_algorithm)
    aux = SpecAuxHiddenStateConfig()
    if not algorithm.is_none():
        aux.eagle_draft_num_layers = int(model_config.num_nextn_predict_layers or 1)
    kv_dtype_name = str(server_args.kv_cache_dtype)
    layers = model_config.num_hidden_layers
    return dict(
        device="cuda", gpu_id=0, pp_group=None, model=None, model_config=model_config, server_args=server_args,
        kv_cache_dtype=torch.float8_e4m3fn if "fp8" in kv_dtype_name else torch.bfloat16,
        kv_cache_dtype_str=kv_dtype_name, model_dtype=torch.bfloat16, page_size=get_schedule().page_size,
        sliding_window_size=None, spec_algorithm=algorithm, is_draft_worker=False, spec_aux_config=aux,
        is_hybrid_swa=False, is_hybrid_swa_compress=False, use_mla_backend=False,
        layer_info=ModelLayerInfo(start_layer=0, end_layer=layers, num_effective_layers=layers),
        forward_stream=None, req_to_token_pool=None, token_to_kv_pool_allocator=None, memory_pool_config=None,
    )


def _resolve_with(kvc, pre_load_gib: float, post_capture: bool) -> dict:
    from sglang.srt.runtime_context import get_schedule

    return _resolve_pools(kvc, pre_load_gib, get_schedule(), post_capture)


def _resolve_pools(sizer, pre_load_gib: float, resolved, post_capture: bool) -> dict:
    """The release's pool resolution on `sizer` (the configurator, or 0.5.13's ModelRunner); `resolved` holds
    the arguments as resolved (the schedule, or the server args)."""
    try:
        config = sizer._resolve_memory_pool_config(pre_load_gib)
    except (AssertionError, ValueError, RuntimeError) as error:
        return _pool_error(error, resolved.mem_fraction_static)
    return _figures(config, resolved, sizer._calculate_mamba_ratio(), post_capture,
                    sizer.mambaish_config.mamba2_cache_params.mamba_cache_per_req)


def _size_configurator_0_5_23(argv: list[str], pre_load_gib: float, after_load_gib: float) -> dict:
    """0.5.23: the configurator takes the attention-DP and PP widths; ranks are published with the args."""
    server_args, refused = _resolved_args(argv, resolve_once=True)
    if refused:
        return refused
    import types

    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.mem_cache import kv_cache_configurator as configurator_module
    from sglang.srt.model_executor.model_runner_components.kv_pool_runtime import is_post_capture_kv_active
    from sglang.srt.runtime_context import SpawnRanks, get_parallel, publish

    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=0, dp_rank=0, gpu_id=0))
    # The WORLD group is only read for the cross-rank minimum of free memory, which is faked below.
    get_parallel().override_permanently(world_group=types.SimpleNamespace(cpu_group=None))
    configurator_module.get_available_gpu_memory = lambda *args, **kwargs: after_load_gib
    model_config = ModelConfig.from_server_args(server_args)
    inputs = _configurator_inputs(server_args, model_config)
    post_capture = is_post_capture_kv_active(server_args=server_args, is_draft_worker=False,
                                             spec_algorithm=inputs["spec_algorithm"], token_to_kv_pool_allocator=None)
    kvc = configurator_module.KVCacheConfigurator(
        attn_dp_size=get_parallel().attn_dp_size, pp_size=1, post_capture_kv_active=post_capture, **inputs)
    return _resolve_with(kvc, pre_load_gib, post_capture)


def _size_configurator_0_5_19(argv: list[str], pre_load_gib: float, after_load_gib: float) -> dict:
    """0.5.19: as 0.5.20, but the derived widths are stamped when the groups are built, not at publish."""
    from sglang.srt.runtime_context import derive_parallel_widths, get_parallel

    def stamp(server_args, attention_dp: int) -> None:
        get_parallel().stamp_derived_widths(**derive_parallel_widths(
            tp_size=server_args.tp_size, attn_cp_size=server_args.attn_cp_size, attn_dp_size=attention_dp,
            moe_ep_size=server_args.ep_size, moe_dp_size=server_args.moe_dp_size, dcp_size=server_args.dcp_size,
            dcp_enabled=server_args.dcp_size > 1))

    return _size_with_parallel_state(argv, pre_load_gib, after_load_gib, stamp)


def _size_configurator_0_5_20(argv: list[str], pre_load_gib: float, after_load_gib: float) -> dict:
    """0.5.20: the configurator is handed the runner's ParallelState; publish derives the widths."""
    return _size_with_parallel_state(argv, pre_load_gib, after_load_gib, lambda server_args, attention_dp: None)


def _size_with_parallel_state(argv: list[str], pre_load_gib: float, after_load_gib: float, stamp) -> dict:
    """0.5.19 and 0.5.20: 0.5.23's configurator, given a ParallelState; the WORLD group is a global."""
    import types

    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.distributed.parallel_state_wrapper import ParallelState
    from sglang.srt.mem_cache import kv_cache_configurator as configurator_module
    from sglang.srt.model_executor.model_runner_components.kv_pool_runtime import is_post_capture_kv_active
    from sglang.srt.runtime_context import derive_attention_widths, publish

    server_args, refused = _resolved_args(argv, resolve_once=True)
    if refused:
        return refused
    publish(server_args, role="scheduler")
    attention_dp, attention_tp = derive_attention_widths(
        tp_size=server_args.tp_size, attn_cp_size=server_args.attn_cp_size, dp_size=server_args.dp_size,
        enable_dp_attention=server_args.enable_dp_attention)
    stamp(server_args, attention_dp)
    configurator_module.get_world_group = lambda: types.SimpleNamespace(world_size=1, cpu_group=None)
    configurator_module.get_available_gpu_memory = lambda *args, **kwargs: after_load_gib
    ps = ParallelState.trivial(tp_size=server_args.tp_size, dp_size=server_args.dp_size, attn_tp_size=attention_tp,
                               attn_dp_size=attention_dp, moe_ep_size=server_args.ep_size)
    model_config = ModelConfig.from_server_args(server_args)
    post_capture = is_post_capture_kv_active(server_args=server_args, is_draft_worker=False)
    kvc = configurator_module.KVCacheConfigurator(ps=ps, post_capture_kv_active=post_capture,
                                                  **_configurator_inputs(server_args, model_config))
    return _resolve_with(kvc, pre_load_gib, post_capture)


def _size_model_runner_0_5_13(argv: list[str], pre_load_gib: float, after_load_gib: float) -> dict:
    """0.5.13.post1: the sizing is ModelRunner's KV-cache mixin, over the runner's attributes and server_args."""
    server_args, refused = _resolved_args(argv, resolve_once=False)
    if refused:
        return refused
    import types

    import torch

    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.layers import dp_attention
    from sglang.srt.model_executor import model_runner as runner_module
    from sglang.srt.model_executor import model_runner_kv_cache_mixin as mixin_module
    from sglang.srt.model_executor import pool_configurator as pool_module
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    attention_dp = server_args.dp_size if server_args.enable_dp_attention else 1
    attention_tp = server_args.tp_size // attention_dp
    # The attention TP group's width, as initialize_model_parallel would build it.
    for module in (dp_attention, pool_module, mixin_module):
        module.get_attention_tp_size = lambda: attention_tp
    mixin_module.get_world_group = lambda: types.SimpleNamespace(world_size=1, cpu_group=None)
    mixin_module.get_available_gpu_memory = lambda *args, **kwargs: after_load_gib
    runner = object.__new__(runner_module.ModelRunner)
    model_config = ModelConfig.from_server_args(server_args)
    layers = model_config.num_hidden_layers
    kv_dtype_name = str(server_args.kv_cache_dtype)
    runner.__dict__.update(
        server_args=server_args, model_config=model_config, model=None, device="cuda", gpu_id=0,
        mem_fraction_static=server_args.mem_fraction_static, tp_size=server_args.tp_size, dp_size=attention_dp,
        pp_size=1, start_layer=0, end_layer=layers, num_effective_layers=layers, is_draft_worker=False,
        spec_algorithm=SpeculativeAlgorithm.from_string(server_args.speculative_algorithm),
        kv_cache_dtype=torch.float8_e4m3fn if "fp8" in kv_dtype_name else torch.bfloat16,
        use_mla_backend=False, is_hybrid_swa=False, memory_pool_config=None,
        _linear_attn_registry_cache=runner_module._UNSET)
    return _resolve_pools(runner, pre_load_gib, server_args, False)


_ADAPTERS = {"0.5.13": _size_model_runner_0_5_13, "0.5.19": _size_configurator_0_5_19,
             "0.5.20": _size_configurator_0_5_20, "0.5.23": _size_configurator_0_5_23}
# Imported once in the child, before the forks: the module each family's sizing lives in.
_SIZING_MODULES = {"0.5.13": "sglang.srt.model_executor.model_runner",
                   "0.5.19": "sglang.srt.mem_cache.kv_cache_configurator",
                   "0.5.20": "sglang.srt.mem_cache.kv_cache_configurator",
                   "0.5.23": "sglang.srt.mem_cache.kv_cache_configurator"}


def _child_main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    cases = request["cases"]
    results: list[dict | None] = [None] * len(cases)
    # The release reads the vendor and capability while importing (lru_cached): one child per device kind.
    kinds = sorted({(case["device"]["vendor"], tuple(case["device"]["capability"])) for case in cases})
    if len(kinds) > 1:
        raise SystemExit(f"one device kind per child, got {kinds}")
    if cases:
        _fake_device(cases[0]["device"])
        _skip_fakes_of_missing_ops()
        engine_cli = _load_engine_cli()
        engine_cli._isolate(request)
        sys.modules["sglang"] = importlib.util.module_from_spec(importlib.util.find_spec("sglang"))
        importlib.import_module("sglang.srt.server_args")
        importlib.import_module(_SIZING_MODULES[_family(request["version"])])
    for index, case in enumerate(cases):
        results[index] = engine_cli.run_forked(lambda scratch: _size_one(case, scratch, request["version"]),
                                               "qwen35-sizing-")
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    _child_main(*sys.argv[1:])
