"""`qwen35 plan`: work out how a Qwen3.5 checkpoint fits the GPUs at hand, and the commands to serve it."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from qwen35.planner.errors import InputError

EXAMPLES = """
Examples:

    qwen35 plan --model Qwen3.5-397B-A17B --precision bf16 --gpu H100:8

    qwen35 plan --model Qwen/Qwen3.5-9B-FP8 --gpu H200:1 --strategy latency --json

    qwen35 plan --model ./checkpoints/my-qwen35 --explain
"""


def resolve_target(gpu: str, fallback: Optional[str]):
    """The GPU model, per-node count and measured memory to plan for: named, or detected."""
    from qwen35.planner.hardware.catalog import parse_gpu_target

    if gpu != "auto":
        model, count = parse_gpu_target(gpu)
        return model, count, None, []
    from qwen35.planner.hardware.detect import detect_hardware

    report = detect_hardware()
    notes = list(report.warnings)
    if report.gpus:
        first = report.gpus[0]
        if first.catalog is None:
            raise InputError(f"detected GPU '{first.name}' is not in the catalog",
                             "name a known target with --gpu, e.g. --gpu H100:8")
        return first.catalog, len(report.gpus), first.memory_total_bytes, notes
    if fallback:
        model, count = parse_gpu_target(fallback)
        return model, count, None, [f"no GPU detected; planning for the named target {model.key}:{count}"]
    raise InputError("no GPU detected on this machine", "name a target, e.g. --gpu H100:8")


def plan_command(
    model: str = typer.Option(..., "--model", "-m", help="Registry name (Qwen3.5-9B), hub id (Qwen/Qwen3.5-9B-FP8) or a local checkpoint directory."),
    gpu: str = typer.Option("auto", "--gpu", help="GPU target NAME[:COUNT] (e.g. H200:8), or 'auto' to detect."),
    fallback_gpu: Optional[str] = typer.Option(None, "--fallback-gpu", help="Target to use when --gpu auto finds no GPU."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes available (default: as many as needed, up to 4)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16, fp8 or nvfp4 (default: the checkpoint's own)."),
    engine: str = typer.Option("sglang", "--engine", help="sglang, vllm or bundled."),
    engine_version: Optional[str] = typer.Option(None, "--engine-version", help="Engine release to render for when it is not installed."),
    context_length: Optional[int] = typer.Option(None, "--context-length", help="Context length (default 262144, reduced to fit, not below 131072)."),
    strategy: str = typer.Option("throughput", "--strategy", help="throughput, or latency (MTP speculative decoding)."),
    max_running_requests: Optional[int] = typer.Option(None, "--max-running-requests", help="Concurrent requests the plan must hold."),
    mamba_strategy: Optional[str] = typer.Option(None, "--mamba-strategy", help="no_buffer or extra_buffer (SGLang)."),
    mamba_ssm_dtype: str = typer.Option("fp32", "--mamba-ssm-dtype", help="Recurrent-state dtype: fp32 (default) or bf16."),
    host: str = typer.Option("0.0.0.0", "--host"),
    port: int = typer.Option(30000, "--port"),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name"),
    dist_init_addr: Optional[str] = typer.Option(None, "--dist-init-addr", help="HOST:PORT of node 0 for multi-node plans."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the plan as YAML."),
    explain: bool = typer.Option(False, "--explain", help="Show the equation behind every number."),
) -> None:
    """Plan a deployment: parallelism, context, concurrency, memory, and the engine commands."""
    from qwen35.planner.models.registry import resolve_model
    from qwen35.planner.plan import PlanRequest
    from qwen35.planner.solver import solve

    if mamba_ssm_dtype not in ("fp32", "bf16"):
        raise InputError(f"unknown --mamba-ssm-dtype '{mamba_ssm_dtype}'", "choose fp32 or bf16")
    if precision is not None and precision.lower() not in ("bf16", "fp8", "nvfp4", "fp4"):
        raise InputError(f"unknown precision '{precision}'", "choose bf16, fp8 or nvfp4")
    resolved = resolve_model(model)
    gpu_model, count, measured, notes = resolve_target(gpu, fallback_gpu)
    request = PlanRequest(
        model=model, gpu=gpu_model.key, gpus_per_node=count,
        precision={"fp4": "nvfp4"}.get(precision.lower(), precision.lower()) if precision else None,
        nodes=nodes, engine=engine, engine_version=engine_version, context_length=context_length,
        strategy=strategy, max_running_requests=max_running_requests, mamba_strategy=mamba_strategy,
        mamba_ssm_dtype=mamba_ssm_dtype, host=host, port=port, served_model_name=served_model_name,
        dist_init_addr=dist_init_addr, gpu_memory_bytes=measured,
    )
    plan = solve(request, gpu_model, resolved)
    for note in notes + plan.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if as_json:
        print(json.dumps(plan.to_dict(), indent=2))
    elif as_yaml:
        import yaml

        print(yaml.safe_dump(plan.to_dict(), sort_keys=False), end="")
    else:
        from rich.console import Console

        from qwen35.launcher.plan_view import render_plan

        render_plan(plan, Console(), explain=explain)
    if not plan.fits:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add `plan` to the CLI."""
    app.command("plan", help=plan_command.__doc__ + "\n\n" + EXAMPLES)(plan_command)
