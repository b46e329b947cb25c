"""Run a vLLM release's own start-up sizing on CPU, for the `vllm serve` commands we emit.

The release's Python files are installed as the parser harness installs them (``engine_cli``),
with the light packages that the engine config, the Qwen3.5 model module and the KV-cache
planner import. A child process (this file run as a script) fakes the plan's CUDA or ROCm devices and,
for each case, runs what ``EngineCore._initialize_kv_caches`` runs, with the release's functions:

1. parses the argv with the ``vllm serve`` parser and builds the ``VllmConfig``
   (``EngineArgs.create_engine_config``): its validation, the Qwen3.5 and hybrid
   attention+mamba ``verify_and_update_config`` (prefix caching on, mamba cache mode ``align``);
2. puts one layer object per decoder layer (and per MTP layer when speculation is on) in the
   config's forward context, as loading the model does, and runs the platform's
   ``update_block_size_for_backend``: the attention block size raised so one attention page
   holds a mamba page, the mamba page padded to it;
3. asks every layer for its KV-cache spec (``get_kv_cache_spec``: full attention on the
   full-attention layers, the GDN layer's mamba spec with its prefill checkpoint block), resolves
   the layout, groups the layers (``get_global_kv_cache_groups``) and plans the pool
   (``get_kv_cache_configs``, which also checks that one ``--max-model-len`` request fits);
4. reports the pool: blocks, block and page sizes, the state blocks a request holds in each
   mamba group, and the release's own capacity figures (``get_kv_cache_capacity``: the tokens
   and the concurrency it logs at start-up).

What is faked, and the assumptions the figures carry:

- The device: ``torch.cuda`` answers as ``count`` GPUs of the plan's kind (capability, total
  memory); ``torch.version.cuda`` is 13.0, the CUDA of the release's pinned torch wheel (it
  decides the GDN prefill kernel on Blackwell, and so whether a request holds a prefill
  checkpoint block). Nothing is allocated.
- AMD GPUs (a ``Device`` with ``gcn_arch``): the platform is the release's ``RocmPlatform``, on a
  ROCm torch (``torch.version.hip`` set, ``torch.version.cuda`` None). amdsmi is hidden, so the
  platform reads what it would ask amdsmi through ``torch.cuda``: the GCN arch from the device
  properties' ``gcnArchName`` (gfx942 for MI300X/MI325X, gfx950 for MI355X; the capability, 9.4 or
  9.5, is derived from it), the total memory and the device count (``_device_count_amdsmi``). AITER
  is off, as in the commands we emit (no ``VLLM_ROCM_USE_AITER``), and not installed. With that, the
  release's ROCm selector picks ``ROCM_ATTN`` (its first choice; kernel blocks a multiple of 16) and
  the GDN prefill is Triton (FlashInfer is CUDA-only, AITER's FlyDSL needs AITER on), so no request
  holds a prefill checkpoint block and the blocks follow no 64-token checkpoint grid. The FP8
  checkpoints' e4m3fn weights would load as e4m3fnuz on gfx942; that changes no size.
- The memory for the KV cache: the profiling run (``determine_available_memory``) cannot run on
  CPU. The harness takes ``total x --gpu-memory-utilization - weights - working set``: the
  fraction as the release resolved it, the weights one GPU holds from our tensor inventory, and
  the non-KV working set (activations of the profiling run, CUDA graphs) as the case gives it,
  which is the planner's own estimate. The release's block arithmetic is exact given that figure.
- The layer objects are the release's own ``Attention`` and ``QwenGatedDeltaNetAttention``
  classes with their constructors skipped: the fields their ``get_kv_cache_spec`` and backend
  queries read are set from the resolved config (KV heads per rank, head size, cache dtype,
  the attention backend the release's selector picks, the GDN prefill backend the release
  resolves); their state shapes come from the model class's ``get_mamba_state_shape_from_config``.
- ``--reasoning-parser`` is left out of the argv: building its config tokenizes the reasoning
  markers (no tokenizer here) and it sizes nothing; the parser harness checks the flag.
- Compiled extensions (``vllm._C``, the flash-attention and MoE extensions, ``torchvision``)
  are import-only stand-ins, ``torch.ops`` namespaces of those extensions answer every op with a
  no-op, and triton is hidden so the release installs its own placeholder (given the dtypes that
  kernel modules read at import, ``tl.bfloat16`` on ROCm); no sizing code calls a kernel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve()
_EXTENSION_OPS = ("_C", "_moe_C", "_C_cache_ops", "_vllm_fa2_C", "_vllm_fa3_C", "_qutlass_C", "_flashmla_C",
                  "_C_stable_libtorch", "_rocm_C")
_TRITON_DTYPES = ("bfloat16", "float16", "float32")
# torch.version.hip of a ROCm 7.0 torch wheel; the sizing code only tests that it is set.
_ROCM_HIP_VERSION = "7.0.51831"


@dataclass(frozen=True)
class Device:
    """The GPUs the child pretends to have: per-device total memory, capability and count.

    ``gcn_arch`` (e.g. "gfx942") makes them AMD GPUs on vLLM's ROCm platform; None, NVIDIA on CUDA.
    """

    total_bytes: int
    capability: tuple[int, int]
    count: int
    name: str
    gcn_arch: str | None = None


@dataclass(frozen=True)
class SizingCase:
    """One `vllm serve` command (what follows `vllm serve`), the checkpoint config and the memory it plans with."""

    argv: list[str]
    config: dict
    device: Device
    weights_bytes: int
    working_set_bytes: int


def vllm_sizing(version: str, cases: list[SizingCase], root: Path | None = None) -> list[dict]:
    """Each case's outcome: {"error": message, "stage": ...} or the release's pool figures."""
    from .engine_cli import _ask_child, ensure_vllm_sizing

    target = ensure_vllm_sizing(version, root)
    # The platform caches the capability, the GCN arch and the device count once read: one child per
    # kind and count.
    by_kind: dict[tuple, list[int]] = {}
    for index, case in enumerate(cases):
        by_kind.setdefault(_kind(case.device.__dict__), []).append(index)
    results: list[dict] = [{}] * len(cases)
    for indices in by_kind.values():
        payload = [{"argv": cases[i].argv, "config": cases[i].config, "device": cases[i].device.__dict__,
                    "weights_bytes": cases[i].weights_bytes, "working_set_bytes": cases[i].working_set_bytes}
                   for i in indices]
        answers = _ask_child("vllm-sizing", target, {"mode": "sizing", "cases": payload}, script=_HERE)
        for index, answer in zip(indices, answers):
            results[index] = answer
    return results


def _kind(device: dict) -> tuple:
    return tuple(device["capability"]), device["count"], device.get("gcn_arch")


# --- the child (this file run as a script) -------------------------------------------------


class _NoOps:
    """A torch.ops namespace of a compiled extension that is not there: every op is a no-op."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: False


class _TritonConfig:
    """triton.Config as a record: module-level autotune lists filter on its fields while importing."""

    def __init__(self, kwargs=None, num_warps=4, num_stages=1, **rest):
        self.kwargs, self.num_warps, self.num_stages = kwargs or {}, num_warps, num_stages


def _fake_device(device: dict, stubs: list[str]) -> None:
    import types

    import torch
    import torch._dynamo  # noqa: F401  (imported before the fake: it probes the real build)
    import torch._inductor.utils  # noqa: F401

    capability = tuple(device["capability"])
    gcn_arch = device.get("gcn_arch")
    # The CU count of MI300X/MI325X (304) and MI355X (256); the SM count of H100. Sizing reads neither.
    units = (256 if gcn_arch == "gfx950" else 304) if gcn_arch else 132
    props = types.SimpleNamespace(name=device["name"], major=capability[0], minor=capability[1],
                                  multi_processor_count=units, total_memory=device["total_bytes"],
                                  gcnArchName=gcn_arch or "")
    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda._is_compiled = lambda: True
    cuda._device_count_nvml = lambda: device["count"]
    cuda.device_count = lambda: device["count"]
    cuda.current_device = lambda: 0
    cuda.get_device_capability = lambda _device=None: capability
    cuda.get_device_name = lambda _device=None: device["name"]
    cuda.get_device_properties = lambda _device=None: props
    cuda.mem_get_info = lambda _device=None: (device["total_bytes"], device["total_bytes"])
    if gcn_arch:
        # A ROCm build of torch: amdsmi hidden, so the platform reads the arch (gcnArchName), the total
        # memory and the device count through torch.cuda, as it does when amdsmi cannot answer.
        cuda._device_count_amdsmi = lambda: device["count"]
        torch.version.cuda, torch.version.hip = None, _ROCM_HIP_VERSION
        sys.modules["amdsmi"] = None
    else:
        torch.version.cuda, torch.version.hip = "13.0", None
    torch.library.register_fake = lambda op, fn=None, **kwargs: fn if fn is not None else (lambda f: f)
    for namespace in _EXTENSION_OPS:
        setattr(torch.ops, namespace, _NoOps())
    sys.modules["triton"] = None  # absent: the release installs its own placeholder
    engine_cli = _load_engine_cli()
    for root in stubs:
        # The vllm.* extensions sit in packages whose import needs them: no find_spec probe first.
        sys.meta_path.insert(0, engine_cli._StandInFinder(root))
    import vllm.platforms
    import vllm.triton_utils

    vllm.triton_utils.triton.Config = _TritonConfig
    for dtype in _TRITON_DTYPES:
        # Kernel modules pick a dot dtype at import (bf16 on ROCm): the placeholder language lacks them.
        if not hasattr(vllm.triton_utils.tl, dtype):
            setattr(vllm.triton_utils.tl, dtype, None)
    if gcn_arch:
        from vllm.platforms.rocm import RocmPlatform

        vllm.platforms._current_platform = RocmPlatform()
    else:
        from vllm.platforms.cuda import NonNvmlCudaPlatform

        vllm.platforms._current_platform = NonNvmlCudaPlatform()
    # Model inspection runs in a subprocess to keep CUDA uninitialised; here it must see the fakes.
    import vllm.model_executor.models.registry as registry

    registry._run_in_subprocess = lambda function: function()


def _load_engine_cli():
    spec = importlib.util.spec_from_file_location("qwen35_engine_cli", _HERE.with_name("engine_cli.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _without(argv: list[str], option: str) -> list[str]:
    if option not in argv:
        return argv
    at = argv.index(option)
    return argv[:at] + argv[at + 2:]


def _layer_classes(vllm_config, model_cls):
    """The release's layer classes, built from the resolved config instead of from weights."""
    import torch.nn as nn
    from vllm.model_executor.layers.attention.attention import Attention
    from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (
        QwenGatedDeltaNetAttention,
        _resolve_gdn_prefill_backend,
    )
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype
    from vllm.v1.attention.backend import AttentionType
    from vllm.v1.attention.backends.gdn_attn import FLASHINFER_GDN_CHECKPOINT_ALIGNMENT

    model_config = vllm_config.model_config

    class FullAttention(Attention):
        def __init__(self, backend):
            nn.Module.__init__(self)
            self.attn_type = AttentionType.DECODER
            self.sliding_window = None
            self.attn_backend = backend
            self.num_kv_heads = model_config.get_num_kv_heads(vllm_config.parallel_config)
            self.head_size = self.head_size_v = model_config.get_head_size()
            self.kv_cache_dtype = vllm_config.cache_config.cache_dtype
            self.kv_cache_torch_dtype = kv_cache_dtype_str_to_dtype(self.kv_cache_dtype, model_config)

    class GatedDeltaNet(QwenGatedDeltaNetAttention):
        def __init__(self):
            nn.Module.__init__(self)
            self.vllm_config = vllm_config
            self.model_config, self.cache_config = model_config, vllm_config.cache_config
            _, self.gdn_prefill_backend = _resolve_gdn_prefill_backend(vllm_config)
            # As the layer's constructor: FlashInfer's prefill exports align-mode checkpoints.
            exports = vllm_config.cache_config.mamba_cache_mode == "align" and self.gdn_prefill_backend == "flashinfer"
            self._checkpoint_alignment = FLASHINFER_GDN_CHECKPOINT_ALIGNMENT if exports else None

        def get_state_shape(self):
            return model_cls.get_mamba_state_shape_from_config(self.vllm_config)

    return FullAttention, GatedDeltaNet


def _size_one(case: dict, scratch: Path) -> dict:
    from vllm.config.vllm import set_current_vllm_config
    from vllm.distributed.kv_transfer.kv_connector.utils import get_current_attn_backends
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.model_executor.models import ModelRegistry
    from vllm.platforms import current_platform
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.attention.backends.utils import (
        get_supported_kv_cache_layouts,
        record_kv_cache_layout,
        resolve_kv_cache_layout,
    )
    from vllm.v1.attention.selector import get_attn_backend
    from vllm.v1.core.kv_cache_planning import get_global_kv_cache_groups, get_kv_cache_configs
    from vllm.v1.core.kv_cache_utils import generate_scheduler_kv_cache_config, get_kv_cache_capacity
    from vllm.v1.core.single_type_kv_cache_manager import register_all_kvcache_specs
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MambaSpec

    model_dir = scratch / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(case["config"]))
    argv = _without(list(case["argv"]), "--reasoning-parser")
    argv[0] = str(model_dir)
    args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(argv)
    args.model = args.model_tag  # as `vllm serve` does with the positional model
    try:
        vllm_config = EngineArgs.from_cli_args(args).create_engine_config()
    except (AssertionError, ValueError, RuntimeError) as error:
        return {"error": f"{type(error).__name__}: {error}", "stage": "engine_config"}

    model_config, cache_config = vllm_config.model_config, vllm_config.cache_config
    model_cls, _ = ModelRegistry.resolve_model_cls(model_config.architecture, model_config=model_config)
    FullAttention, GatedDeltaNet = _layer_classes(vllm_config, model_cls)
    with set_current_vllm_config(vllm_config):
        backend = get_attn_backend(model_config.get_head_size(), model_config.dtype, cache_config.cache_dtype)
    layers = vllm_config.compilation_config.static_forward_context
    text = model_config.hf_text_config
    for index, kind in enumerate(text.layer_types):
        if kind == "full_attention":
            layers[f"language_model.model.layers.{index}.self_attn.attn"] = FullAttention(backend)
        else:
            layers[f"language_model.model.layers.{index}.linear_attn"] = GatedDeltaNet()
    speculative = vllm_config.speculative_config
    if speculative is not None:
        # The MTP draft's decoder layers are full attention, in the same forward context.
        for index in range(text.mtp_num_hidden_layers):
            layers[f"mtp.layers.{text.num_hidden_layers + index}.self_attn.attn"] = FullAttention(backend)
    try:
        current_platform.update_block_size_for_backend(vllm_config)
    except (AssertionError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}", "stage": "block_size"}
    specs = {name: layer.get_kv_cache_spec(vllm_config) for name, layer in layers.items()}

    register_all_kvcache_specs(vllm_config)
    layouts = [[layout.name for layout in get_supported_kv_cache_layouts(get_current_attn_backends(vllm_config))]]
    layout = resolve_kv_cache_layout(vllm_config, layouts, list(specs.values()))
    groups = get_global_kv_cache_groups(vllm_config, [specs])
    vllm_config.adjust_dcp_kv_cache_interleave_size(groups)
    record_kv_cache_layout(cache_config, layout.name)
    available = int(case["device"]["total_bytes"] * cache_config.gpu_memory_utilization
                    - case["weights_bytes"] - case["working_set_bytes"])
    try:
        configs = get_kv_cache_configs(vllm_config, [specs], [available], groups)
    except ValueError as error:
        return {"error": f"{type(error).__name__}: {error}", "stage": "kv_cache", "available_bytes": available}
    scheduler = generate_scheduler_kv_cache_config(configs)
    tokens, concurrency = get_kv_cache_capacity(vllm_config, scheduler)
    mamba_groups = [group for group in scheduler.kv_cache_groups if isinstance(group.kv_cache_spec, MambaSpec)]
    attention_groups = [group for group in scheduler.kv_cache_groups
                        if isinstance(group.kv_cache_spec, FullAttentionSpec)]
    mamba = mamba_groups[0].kv_cache_spec
    attention = attention_groups[0].kv_cache_spec
    state_blocks_per_request = sum(group.kv_cache_spec.max_memory_usage_bytes(vllm_config)
                                   // group.kv_cache_spec.page_size_bytes for group in mamba_groups)
    return {
        "error": None,
        "available_bytes": available,
        "gpu_memory_utilization": float(cache_config.gpu_memory_utilization),
        "enable_prefix_caching": bool(cache_config.enable_prefix_caching),
        "mamba_cache_mode": cache_config.mamba_cache_mode,
        "attention_backend": backend.get_name(),
        "gdn_prefill_backend": next(layer for layer in layers.values()
                                    if isinstance(layer, GatedDeltaNet)).gdn_prefill_backend,
        "block_size": int(cache_config.block_size),
        "page_size_bytes": int(attention.page_size_bytes),
        "mamba_state_bytes": int(mamba.real_page_size_bytes),
        "num_blocks": int(scheduler.num_blocks),
        "groups": [[type(group.kv_cache_spec).__name__, len(group.layer_names)] for group in scheduler.kv_cache_groups],
        "state_blocks_per_request": int(state_blocks_per_request),
        "checkpoint_blocks": int(mamba.num_prefill_checkpoint_blocks),
        "speculative_blocks": int(mamba.num_speculative_blocks),
        "kv_cache_tokens": int(tokens),
        "max_concurrency": float(concurrency),
        "max_num_seqs": int(vllm_config.scheduler_config.max_num_seqs),
        "max_model_len": int(model_config.max_model_len),
    }


def _child_main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    cases = request["cases"]
    kinds = sorted({_kind(case["device"]) for case in cases}, key=repr)
    if len(kinds) > 1:
        raise SystemExit(f"one device kind per child, got {kinds}")
    with tempfile.TemporaryDirectory(prefix="qwen35-vllm-cache-") as cache:
        # The release's caches (model info, compile) go to a throwaway folder; no hub access.
        os.environ.update({"VLLM_CACHE_ROOT": cache, "HF_HUB_OFFLINE": "1"})
        if cases:
            _fake_device(cases[0]["device"], request["stubs"])
            import vllm.engine.arg_utils  # noqa: F401  (imported once, before the forks)
            import vllm.entrypoints.common.cli_args  # noqa: F401
            import vllm.model_executor.models.qwen3_5  # noqa: F401
            import vllm.v1.core.kv_cache_planning  # noqa: F401
        engine_cli = _load_engine_cli()
        results = [engine_cli.run_forked(lambda scratch, case=case: _size_one(case, scratch), "qwen35-vllm-sizing-")
                   for case in cases]
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    _child_main(*sys.argv[1:])
