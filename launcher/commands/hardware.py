"""`qwen35 hardware`: show the GPUs an engine started here would see."""
from __future__ import annotations

import json
import sys

import typer

HELP = """Show the GPUs an engine started here would see: model, memory, links, driver.

Honours CUDA_VISIBLE_DEVICES (NVIDIA) and ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES (AMD).
Warnings go to stderr; the table or JSON goes to stdout.

**Examples**

```
qwen35 hardware
qwen35 hardware --json
CUDA_VISIBLE_DEVICES=2,3 qwen35 hardware
```
"""

_LINK_LABELS = {"self": "X", "nvlink": "NV", "xgmi": "XGMI", "none": "-", "unknown": "?"}


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 30):.1f}"


def _render_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    parts = [f"{report.count} GPU{'s' if report.count != 1 else ''}", f"source: {report.source}"]
    if report.driver_version:
        parts.append(f"driver {report.driver_version}")
    if report.cuda_driver_version:
        parts.append(f"CUDA {report.cuda_driver_version}")
    if report.visibility:
        parts.append(report.visibility)
    console.print(", ".join(parts), highlight=False)
    if not report.gpus:
        return

    table = Table(show_edge=False)
    for column in ("#", "GPU", "catalog", "total GiB", "free GiB", "arch", "PCI bus", "MIG"):
        table.add_column(column)
    for gpu in report.gpus:
        arch = (f"sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}"
                if gpu.compute_capability else gpu.gfx_target or "-")
        mig = gpu.mig_instance or ("on" if gpu.mig_enabled else "off")
        table.add_row(str(gpu.index), gpu.name, gpu.model.key if gpu.model else "unknown",
                      _gib(gpu.memory_total_bytes), _gib(gpu.memory_free_bytes), arch,
                      gpu.pci_bus_id or "-", mig)
    console.print(table)

    if report.count > 1:
        links = Table(title="links", show_edge=False)
        links.add_column("")
        for gpu in report.gpus:
            links.add_column(f"GPU{gpu.index}")
        for gpu, row in zip(report.gpus, report.links):
            labels = [_LINK_LABELS.get(kind, kind.upper()) for kind in row]
            links.add_row(f"GPU{gpu.index}", *labels)
        console.print(links)
        summary = {True: "every pair on NVLink/XGMI", False: "not every pair on NVLink/XGMI",
                   None: "fabric unknown"}[report.all_pairs_linked]
        console.print(f"links: {summary}", highlight=False)


def hardware(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Show the GPUs an engine started here would see."""
    from qwen35.planner.hardware import detect_hardware, report_to_dict

    report = detect_hardware()
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(report_to_dict(report), indent=2))
    else:
        _render_table(report)


def register(app: typer.Typer) -> None:
    """Add the `hardware` command to the CLI."""
    app.command("hardware", help=HELP)(hardware)
