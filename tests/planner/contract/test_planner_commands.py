"""Contract: every command the planner emits parses with the real parser of the release it targets.

All eight checkpoints x three precisions x every catalog GPU x both strategies, rendered for
SGLang releases on both sides of the mamba-flag rename (and the alias era between), and for vLLM.
"""
from __future__ import annotations

import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.hardware.catalog import GPU_MODELS
from qwen35.planner.models.registry import MODEL_NAMES, resolve_model
from qwen35.planner.plan import PRECISIONS, STRATEGIES, PlanRequest
from qwen35.planner.solver import solve

from .engine_cli import default_cache_root, index_reachable, is_installed, parse_sglang, parse_vllm

SGLANG_VERSIONS = ("0.5.13.post1", "0.5.19", "0.5.23")
VLLM_VERSION = "0.33.0"
SGLANG_PREFIX = ["python3", "-m", "sglang.launch_server"]
VLLM_PREFIX = ["vllm", "serve"]


def planned_argvs(engine: str, version: str, prefix: list[str]) -> list[list[str]]:
    """The distinct argvs (after the program) of every fitting plan, one per node."""
    seen: dict[tuple[str, ...], None] = {}
    for name in MODEL_NAMES:
        resolved = resolve_model(name)
        for precision in PRECISIONS:
            for gpu in GPU_MODELS:
                for strategy in STRATEGIES:
                    request = PlanRequest(model=name, gpu=gpu.key, gpus_per_node=gpu.default_count,
                                          precision=precision, engine=engine, engine_version=version,
                                          strategy=strategy)
                    try:
                        plan = solve(request, gpu, resolved)
                    except InputError:
                        continue
                    for command in plan.commands:
                        assert command.argv[:len(prefix)] == prefix
                        seen[tuple(command.argv[len(prefix):])] = None
    return [list(argv) for argv in seen]


def _skip_when_offline(engine: str, version: str) -> None:
    if not is_installed(engine, version) and not index_reachable():
        pytest.skip(f"{engine} {version} is not cached in {default_cache_root()} and the package index is unreachable")


@pytest.mark.network
@pytest.mark.parametrize("version", SGLANG_VERSIONS)
def test_every_sglang_command_parses_with_its_release(version):
    argvs = planned_argvs("sglang", version, SGLANG_PREFIX)
    assert len(argvs) > 50
    flag = "--mamba-radix-cache-strategy" if version != "0.5.13.post1" else "--mamba-scheduler-strategy"
    assert all(flag in argv for argv in argvs)
    _skip_when_offline("sglang", version)
    verdicts = parse_sglang(version, argvs)
    rejected = [(" ".join(argv), verdict) for argv, verdict in zip(argvs, verdicts) if verdict is not None]
    assert not rejected, rejected[:3]


@pytest.mark.network
def test_every_vllm_command_parses():
    argvs = planned_argvs("vllm", VLLM_VERSION, VLLM_PREFIX)
    assert len(argvs) > 20
    _skip_when_offline("vllm", VLLM_VERSION)
    verdicts = parse_vllm(VLLM_VERSION, argvs)
    rejected = [(" ".join(argv), verdict) for argv, verdict in zip(argvs, verdicts) if verdict is not None]
    assert not rejected, rejected[:3]
