"""`qwen35 plan`: work out how a Qwen3.5 checkpoint fits the GPUs at hand, and the commands to serve it."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from qwen35.launcher.commands import plan_options as opts
from qwen35.launcher.commands.plan_options import memory_size_bytes
from qwen35.planner.errors import InputError

EXAMPLES = """
Examples:

    qwen35 plan --model Qwen3.5-397B-A17B --precision bf16 --gpu H100:8

    qwen35 plan --model Qwen/Qwen3.5-9B-FP8 --gpu H200:1 --strategy latency --json

    qwen35 plan --model ./checkpoints/my-qwen35 --explain

    qwen35 plan --model Qwen3.5-9B --gpu A6000:2 --gpu-memory 47.5

    qwen35 plan --model Qwen3.5-122B-A10B --gpu H200:8 --tp 4 --dp 2

    qwen35 plan --profile qwen35-397b-a17b-h200-fp8 --yaml > plan.yaml

    qwen35 plan --profile plan.yaml --port 8080

    qwen35 plan --profile qwen35-397b-a17b-h100-bf16 --emit k8s --output k8s/
"""

# Flags that set a PlanRequest field of the same name; with --profile, the ones given override it.
REQUEST_OPTIONS = ("model", "nodes", "precision", "engine", "engine_version", "context_length", "strategy",
                   "max_running_requests", "mamba_strategy", "mamba_ssm_dtype", "host", "port",
                   "served_model_name", "dist_init_addr", "tp", "dp", "ep")


def option_given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set option `name` (on the command line or through its environment variable)."""
    # Compared by name: typer may carry its own copy of click's ParameterSource enum.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def resolve_request(ctx: typer.Context, values: dict, profile: Optional[str]):
    """The request to plan and the profile's extra args and env: --profile with the flags given on top, or the flags."""
    from dataclasses import replace

    from qwen35.launcher.profiles import find_profile, load_profile, to_plan_request
    from qwen35.planner.hardware.target import hardware_target
    from qwen35.planner.plan import PlanRequest

    if values["mamba_ssm_dtype"] not in ("fp32", "bf16"):
        raise InputError(f"unknown --mamba-ssm-dtype '{values['mamba_ssm_dtype']}'", "choose fp32 or bf16")
    precision = values["precision"]
    if precision is not None and precision.lower() not in ("bf16", "fp8", "nvfp4", "fp4"):
        raise InputError(f"unknown precision '{precision}'", "choose bf16, fp8 or nvfp4")
    memory_bytes = memory_size_bytes(values["gpu_memory"]) if values["gpu_memory"] is not None else None
    values = {**values, "precision": {"fp4": "nvfp4"}.get(precision.lower(), precision.lower()) if precision else None}
    if profile:
        loaded = load_profile(find_profile(profile))
        overrides = {name: values[name] for name in REQUEST_OPTIONS if option_given(ctx, name)}
        notes: list[str] = []
        if option_given(ctx, "gpu"):
            key, count, measured, notes = hardware_target(values["gpu"], values["fallback_gpu"], memory_bytes)
            overrides.update(gpu=key, gpus_per_node=count, gpu_memory_bytes=measured)
        return replace(to_plan_request(loaded), **overrides), loaded.extra_args, loaded.env, notes
    if not values["model"]:
        raise InputError("no model given", "pass --model NAME (e.g. --model Qwen3.5-9B) or --profile FILE")
    key, count, measured, notes = hardware_target(values["gpu"], values["fallback_gpu"], memory_bytes)
    request = PlanRequest(
        model=values["model"], gpu=key, gpus_per_node=count, gpu_memory_bytes=measured,
        **{name: values[name] for name in REQUEST_OPTIONS if name != "model"},
    )
    return request, [], {}, notes


def plan_command(
    ctx: typer.Context,
    model: opts.Model = None,
    gpu: opts.Gpu = "auto",
    fallback_gpu: opts.FallbackGpu = None,
    gpu_memory: opts.GpuMemory = None,
    nodes: opts.Nodes = None,
    precision: opts.Precision = None,
    engine: opts.Engine = "sglang",
    engine_version: opts.EngineVersion = None,
    context_length: opts.ContextLength = None,
    strategy: opts.Strategy = "balanced",
    max_running_requests: opts.MaxRunningRequests = None,
    mamba_strategy: opts.MambaStrategy = None,
    mamba_ssm_dtype: opts.MambaSsmDtype = "fp32",
    host: opts.Host = "0.0.0.0",
    port: opts.Port = 30000,
    served_model_name: opts.ServedModelName = None,
    dist_init_addr: opts.DistInitAddr = None,
    tp: opts.Tp = None,
    dp: opts.Dp = None,
    ep: opts.Ep = None,
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile YAML, shipped profile name, or a plan printed by --yaml/--json; flags given too override it."),
    emit: Optional[str] = typer.Option(None, "--emit", help="k8s: print Kubernetes manifests (LeaderWorkerSet + Service) instead of the plan."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="With --emit k8s: write the manifests into this directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (with the profile that reproduces it)."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the plan as YAML; `--profile` reads it back."),
    explain: bool = typer.Option(False, "--explain", help="Show the equation behind every number."),
) -> None:
    """Plan a deployment: parallelism, context, concurrency, memory, and the engine commands."""
    from qwen35.launcher.profiles import plan_document, plan_request

    chosen = [flag for flag, given in (("--json", as_json), ("--yaml", as_yaml), ("--emit", emit is not None),
                                       ("--explain", explain)) if given]
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} choose different outputs", "pass one of --json, --yaml, --emit k8s, --explain")
    if emit is not None and emit != "k8s":
        raise InputError(f"unknown --emit '{emit}'", "the one output to emit is k8s")
    if output is not None and emit is None:
        raise InputError("--output goes with --emit k8s", "add --emit k8s")
    values = {name: value for name, value in locals().items() if name in REQUEST_OPTIONS}
    values.update(gpu=gpu, fallback_gpu=fallback_gpu, gpu_memory=gpu_memory)
    request, extra_args, env, notes = resolve_request(ctx, values, profile)
    if emit == "k8s":
        from qwen35.launcher.k8s import for_kubernetes

        request = for_kubernetes(request)
    plan = plan_request(request, extra_args, env)
    for note in notes + plan.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if emit == "k8s":
        _emit_k8s(plan, output)
    elif as_json:
        print(json.dumps(plan_document(plan), indent=2))
    elif as_yaml:
        import yaml

        print(yaml.safe_dump(plan_document(plan), sort_keys=False), end="")
    else:
        from rich.console import Console

        from qwen35.launcher.plan_view import render_plan

        render_plan(plan, Console(), explain=explain)
    if not plan.fits:
        raise typer.Exit(3)


def _emit_k8s(plan, output: Optional[str]) -> None:
    from pathlib import Path

    import yaml

    from qwen35.launcher.k8s import dump_manifests, k8s_manifests

    manifests, notes = k8s_manifests(plan)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if output is None:
        print(dump_manifests(manifests, plan), end="")
        return
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        path = directory / f"{manifest['metadata']['name']}-{manifest['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        print(path)


def register(app: typer.Typer) -> None:
    """Add `plan` to the CLI."""
    app.command("plan", help=plan_command.__doc__ + "\n\n" + EXAMPLES)(plan_command)
