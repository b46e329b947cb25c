"""`qwen35 launch`: plan, check this machine, start the engine, wait until it serves, and stay with it."""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from typing import Optional

import typer

from qwen35.launcher.commands import plan_options as opts
from qwen35.launcher.commands.plan import REQUEST_OPTIONS, option_given, resolve_request
from qwen35.planner.errors import InputError

HELP = """Plan, check this machine, then start the engine and wait until it serves.

The engine's log streams to stderr (prefixed) and to a log file; once /health and /v1/models
answer, the endpoint is printed with a curl command and an openai-python snippet. Ctrl-C (or
SIGTERM) stops the engine's whole process group cleanly (SIGKILL after 30 s); the same stop
arriving again within 2 s is the same stop, a later one kills at once. The exit code is the
engine's, and an engine that dies on its own is reported in one line.

Once ready, launch prints the engine's own start-up figures (read from its log: KV tokens, state
slots, running requests, context length, memory fraction) beside the plan's, with the time to
each start-up phase, and warns, naming the likely cause and the flag, where a figure is more
than --plan-tolerance percent off. --strict-plan stops the deployment (clean shutdown, exit 1)
when the engine came up below the plan by more than that. With --json (no --dry-run), stdout
carries one JSON event per line instead: "ready", then "plan_check".

The API key never appears in a command line (which any local user can read): a profile names
the variable that holds it (serving.api_key_env) and launch passes its value to the engine in
the engine's environment (QWEN35_API_KEY for qwen35 serve, VLLM_API_KEY for vLLM) or, as SGLang
reads none, in a private --config file removed once the engine is ready. Before printing
"ready", launch checks that the port is served by the engine it started, not by another server
(a warning only under QWEN35_ENGINE_EXECUTABLE, which may run the engine in a container).
QWEN35_ENGINE_EXECUTABLE, when set, runs in place of the engine program (`python3 -m
sglang.launch_server`, `vllm serve`, `qwen35 serve`) with the same arguments.

**Examples**

```
qwen35 launch --profile qwen35-9b-h100-bf16
qwen35 launch --model Qwen3.5-27B --gpu auto --precision fp8
qwen35 launch --profile qwen35-397b-a17b-h200-fp8 --dry-run --json
qwen35 launch --profile qwen35-397b-a17b-h100-bf16 --dist-init-addr 10.0.0.1:20000 --node-rank 1
qwen35 launch --profile qwen35-demo-cpu --log-file demo.log
qwen35 launch --profile qwen35-9b-h100-bf16 --strict-plan --plan-tolerance 10
qwen35 launch --profile qwen35-demo-cpu --json
```
"""

_STATUS_MARK = {"ok": "ok", "warning": "warn", "skipped": "skip", "failed": "FAIL"}
_LAST_LINES = 20


def launch_command(
    ctx: typer.Context,
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile YAML, shipped profile name, or a plan printed by `qwen35 plan --yaml`; flags given too override it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would run and the preflight results; start nothing."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="For multi-node plans: the node this machine is (0 serves the API)."),
    log_file: Optional[str] = typer.Option(None, "--log-file", help="Engine log file (default ~/.cache/qwen35/logs/MODEL-nodeRANK-TIME.log)."),
    ready_timeout: float = typer.Option(1800.0, "--ready-timeout", help="Seconds to wait for /health and /v1/models."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: the plan's commands and preflight results as JSON; launching: JSON events (ready, plan_check) on stdout."),
    strict_plan: bool = typer.Option(False, "--strict-plan", help="Stop the deployment when the engine comes up below the plan by more than --plan-tolerance."),
    plan_tolerance: float = typer.Option(5.0, "--plan-tolerance", help="Percent an engine figure may differ from the plan's before launch warns (and --strict-plan stops)."),
    # The planning flags, declared once in plan_options (`qwen35 plan` takes the same).
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
) -> None:
    """Plan, check this machine, start the engine and wait until it serves."""
    from rich.console import Console

    from qwen35.launcher import launch
    from qwen35.launcher.profiles import plan_request

    if not 0 <= plan_tolerance < 100:
        raise InputError(f"--plan-tolerance {plan_tolerance:g} is not a percentage below 100", "try --plan-tolerance 5")
    values = {name: value for name, value in locals().items() if name in REQUEST_OPTIONS}
    values.update(gpu=gpu, fallback_gpu=fallback_gpu, gpu_memory=gpu_memory)
    request, extra_args, env, notes = resolve_request(ctx, values, profile)
    plan = plan_request(request, extra_args, env)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for note in notes + plan.warnings:
        console.print(f"warning: {note}", markup=False)
    launch.require_fit(plan)
    command = launch.node_command(plan, node_rank, dry_run=dry_run)
    # A named target (a profile's hardware, or --gpu NAME) may describe another machine.
    detected = gpu.strip().lower() == "auto" and (profile is None or option_given(ctx, "gpu"))
    checks = launch.run_preflight(plan, command, dry_run=dry_run, named_target=not detected)
    if dry_run:
        _print_dry_run(plan, command, checks, console, as_json, node_rank)
        failure = launch.first_failure(checks)
        if failure is not None:
            raise typer.Exit(failure.exit_code)
        return
    _print_checks(checks, console)
    failure = launch.first_failure(checks)
    if failure is not None:
        raise failure
    watch = Watch(log_file, ready_timeout, as_json, strict_plan, plan_tolerance / 100)
    raise typer.Exit(_run(plan, command, console, watch))


@dataclass(frozen=True)
class Watch:
    """How launch runs and watches the engine once the checks passed."""

    log_file: Optional[str]
    ready_timeout: float
    as_json: bool
    strict_plan: bool
    tolerance: float  # a fraction: 0.05 is 5%


def _print_checks(checks, console) -> None:
    for check in checks:
        style = {"failed": "red", "warning": "yellow"}.get(check.status, "")
        mark = _STATUS_MARK[check.status]
        console.print(f"preflight {check.name}: ", end="", markup=False)
        console.print(f"{mark} - {check.detail}", style=style or None, markup=False)


def _print_dry_run(plan, command, checks, console, as_json: bool, node_rank: Optional[int]) -> None:
    from qwen35.launcher import launch

    if as_json:
        typer.echo(json.dumps({"commands": [c.to_dict() for c in plan.commands],
                               "preflight": [check.to_dict() for check in checks]}, indent=2))
        return
    for each in plan.commands:
        label = f"node {each.node_rank}" + (" (this node)" if node_rank == each.node_rank else "")
        if len(plan.commands) > 1:
            typer.echo(f"# {label}")
        typer.echo(each.shell())
    if plan.request.api_key_env:
        typer.echo(f"# plus the API key from ${plan.request.api_key_env}, {launch.how_the_key_travels(plan.engine)}")
    _print_checks(checks, console)


def _run(plan, command, console, watch: Watch) -> int:
    """Start the engine under supervision; return the exit code to leave with."""
    from qwen35.launcher import launch

    api_key = os.environ.get(plan.request.api_key_env) if plan.request.api_key_env else None
    with launch.ApiKeyHandoff(plan.engine, api_key, command.argv) as handoff:
        return _supervise(plan, command, console, watch, api_key, handoff)


def _supervise(plan, command, console, watch: Watch, api_key, handoff) -> int:
    from pathlib import Path

    from qwen35.launcher import launch
    from qwen35.launcher.readiness import PHASE_ENDPOINTS
    from qwen35.launcher.startup_figures import StartupReader
    from qwen35.launcher.supervise import (ApiKeyRejected, EngineCallbacks, EngineCrashed, EngineProcess,
                                          PortAnsweredByAnother, ReadinessTimeout, Supervisor)

    argv = launch.engine_argv(command, plan.engine) + handoff.args
    log_path = Path(watch.log_file) if watch.log_file else launch.default_log_path(plan, command.node_rank)
    multi = len(plan.commands) > 1
    spec = EngineProcess(
        argv=argv, env={**command.env, **handoff.env}, log_path=log_path,
        log_prefix=f"[{plan.engine}{f' node {command.node_rank}' if multi else ''}] ",
        base_url=launch.base_url(plan), api_key=api_key, ready_timeout_s=watch.ready_timeout, poll_interval_s=0.25,
        foreign_listener_fatal=not os.environ.get(launch.ENGINE_EXECUTABLE_ENV),
    )
    shown = shlex.join(argv)  # the key is not in it
    console.print(f"starting {plan.engine}: {shown}", markup=False)
    console.print(f"log: {log_path}", markup=False)
    if multi:
        for other in plan.commands:
            if other.node_rank != command.node_rank:
                console.print(f"node {other.node_rank} runs: {other.shell()}", markup=False)
    reader = StartupReader(plan.engine)

    def on_line(line: str) -> None:
        reader.feed(line)
        console.print(line, markup=False, soft_wrap=True)

    callbacks = EngineCallbacks(on_line=on_line,
                                on_warning=lambda text: console.print(f"warning: {text}", markup=False))
    with Supervisor(spec, callbacks) as supervisor, supervisor.forwarding_signals():
        supervisor.start()
        if command.node_rank != 0:
            console.print(f"node {command.node_rank} started; node 0 serves the API", markup=False)
            return _served(supervisor, console)
        try:
            with console.status(f"waiting for {plan.engine} to load {plan.model}") as status:
                callbacks.on_tick = lambda elapsed, phase: status.update(
                    f"waiting for {plan.engine}: {PHASE_ENDPOINTS.get(phase, phase)} ({elapsed:.0f} s)")
                models = supervisor.wait_ready()
        except (EngineCrashed, ReadinessTimeout, ApiKeyRejected, PortAnsweredByAnother) as error:
            _show_tail(error.last_lines, error.log_path, console)
            raise
        handoff.forget()
        if models is None:  # a stop arrived while it was starting
            return _served(supervisor, console)
        reader.mark_serving()
        model_id = models[0] if models else (plan.request.served_model_name or plan.model)
        url = launch.base_url(plan)
        if watch.as_json:
            _event({"event": "ready", "model": model_id, "url": f"{url}/v1", "engine": plan.engine,
                    "engine_version": plan.engine_version})
        else:
            typer.echo(f"{model_id} is ready at {url}/v1 ({plan.engine} {plan.engine_version}); Ctrl-C stops it.\n")
        if not _check_against_plan(plan, reader, console, watch):
            supervisor.stop()
            return 1
        if not watch.as_json:
            typer.echo(launch.client_snippets(url, model_id, plan.request.api_key_env, launch.example_max_tokens(plan)))
        return _served(supervisor, console)


# The engine logs its figures before it first answers; the log reader may lag a moment behind.
_FIGURES_WAIT_S = 2.0


def _check_against_plan(plan, reader, console, watch: Watch) -> bool:
    """Show the engine's start-up figures beside the plan's; False when --strict-plan must stop it."""
    from qwen35.launcher.startup_figures import LABELS, compare, shortfalls
    from qwen35.launcher.startup_view import render_check

    figures = reader.wait_complete(_FIGURES_WAIT_S)
    rows = compare(plan, figures, plan.engine)
    short = shortfalls(rows, watch.tolerance)
    if watch.as_json:
        _event({"event": "plan_check", "tolerance": watch.tolerance, "figures": [r.to_dict(watch.tolerance) for r in rows],
                "phases_s": figures.phases, "below_plan": [row.name for row in short]})
    else:
        render_check(rows, figures, plan.engine, watch.tolerance, console)
    if watch.strict_plan and short:
        worst = min(short, key=lambda row: row.difference)
        console.print(f"error: {plan.engine} came up below the plan: {LABELS[worst.name]} {int(worst.engine)} against "
                      f"{int(worst.planned)} planned ({worst.difference:+.1%}, tolerance {watch.tolerance:.0%}); "
                      f"stopping it (--strict-plan). {worst.hint}", markup=False, soft_wrap=True)
        return False
    return True


def _event(payload: dict) -> None:
    typer.echo(json.dumps(payload))


def _served(supervisor, console) -> int:
    """Serve until the engine exits; say in one line what happened to it unless we stopped it cleanly."""
    code = supervisor.wait()
    problem = supervisor.exit_problem()
    if problem:
        console.print(f"error: {problem}", markup=False, soft_wrap=True)
    return code


def _show_tail(lines: list[str], log_path, console) -> None:
    tail = lines[-_LAST_LINES:]
    if not tail:
        return
    console.print(f"--- last {len(tail)} lines of the engine log ({log_path}) ---", markup=False)
    for line in tail:
        console.print(line, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `launch` to the CLI."""
    app.command("launch", help=HELP)(launch_command)
