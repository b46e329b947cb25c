"""Human view of a plan with rich: summary, per-GPU memory, commands, reasons and warnings."""
from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from qwen35.planner.figures import human_bytes
from qwen35.planner.plan import Plan


def _summary(plan: Plan) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    gpus = f"{plan.request.gpus_per_node} x {plan.gpu}"
    table.add_row("model", f"{plan.model} ({plan.precision.upper()}) -> {plan.model_path}")
    table.add_row("engine", f"{plan.engine} {plan.engine_version or ''}".strip())
    table.add_row("hardware", gpus + (" per node" if plan.parallel and plan.parallel.nodes > 1 else ""))
    table.add_row("fits", "[green]yes[/]" if plan.fits else "[red]no[/]")
    if plan.parallel:
        p = plan.parallel
        table.add_row("parallel", f"tp {p.tp}  ep {p.ep}  dp {p.dp}  pp {p.pp}  nodes {p.nodes}")
        table.add_row("context", f"{plan.context_length} tokens")
        per_replica = (f", {plan.max_running_requests // p.dp} per replica" if p.dp > 1 else "")
        table.add_row("concurrency", f"{plan.max_running_requests} running requests "
                                     f"({plan.full_context_requests} at full context{per_replica})")
        if plan.engine == "sglang":
            table.add_row("mamba cache", f"{plan.mamba_strategy}, page size {plan.page_size}")
            table.add_row("mem fraction", f"{plan.mem_fraction_static}")
        if plan.speculative:
            table.add_row("speculation", f"MTP, {plan.speculative['draft_tokens']} draft tokens")
    return table


def _memory(plan: Plan) -> Table:
    mem = plan.memory
    table = Table(title="memory per GPU", title_justify="left", show_edge=False)
    table.add_column("part")
    table.add_column("size", justify="right")
    table.add_column("how")
    gpu = mem.get("gpu_memory_bytes", 0)
    static = mem.get("static_bytes", 0)
    weights = mem.get("weights_per_gpu_bytes", 0)
    slots = mem.get("state_slots", 0)
    per_slot = mem.get("state_bytes_per_request_per_gpu", 0)
    tokens = mem.get("kv_tokens", 0)
    per_token = mem.get("kv_bytes_per_token_per_gpu", 0)
    table.add_row("GPU memory", human_bytes(gpu), "")
    table.add_row("weights", human_bytes(weights), f"of {human_bytes(mem.get('weights_total_bytes', 0))} in the checkpoint")
    per_request = int(mem.get("state_slots_per_request", 1))
    if mem.get("block_tokens"):  # one pool of blocks, each holding KV or a linear-attention state
        table.add_row("KV cache and state", human_bytes(mem["block_pool_bytes"]),
                      f"{int(slots)} blocks of {int(mem['block_tokens'])} tokens, shared: {int(tokens)} KV tokens "
                      f"at full context, {per_request} state blocks per request")
    else:
        table.add_row("linear-attention state", human_bytes(slots * per_slot),
                      f"{int(slots)} slots x {human_bytes(per_slot)} ({per_request} per request)")
        table.add_row("KV cache", human_bytes(max(tokens, 0) * per_token), f"{int(tokens)} tokens x {int(per_token)} B")
    table.add_row("engine reserve", human_bytes(gpu - static), "activations, CUDA graphs, communication")
    return table


def render_plan(plan: Plan, console: Console, explain: bool = False) -> None:
    """Print the plan for people: summary, memory, commands, then why and what to watch."""
    parts = [_summary(plan)]
    if plan.memory.get("gpu_memory_bytes"):
        parts += [Text(""), _memory(plan)]
    console.print(Panel(Group(*parts), title="qwen35 plan", expand=False))
    for command in plan.commands:
        label = f"node {command.node_rank}" if len(plan.commands) > 1 else "command"
        console.print(f"[bold]{label}:[/]")
        console.print(command.shell(), soft_wrap=True, markup=False, highlight=False)
    if plan.reasons:
        console.print("[bold]why:[/]")
        for reason in plan.reasons:
            console.print(f"  - {reason}", markup=False, highlight=False)
    if not plan.fits and not plan.ways_out:
        console.print("[bold]ways out:[/] none: no single change to the request makes it fit")
    if not plan.fits and plan.ways_out:
        console.print("[bold]ways out (each re-planned and fits; cheapest first):[/]")
        for way in plan.ways_out:
            console.print(f"  - {way.describe()}", markup=False, highlight=False)
    if explain:
        table = Table(title="how each number was computed", title_justify="left", show_edge=False)
        table.add_column("figure", style="cyan")
        table.add_column("value", justify="right")
        table.add_column("equation")
        for figure in plan.figures:
            value = human_bytes(figure.value) if figure.unit == "bytes" else f"{figure.value:g} {figure.unit}"
            table.add_row(figure.name, value, figure.equation)
        console.print(table)
