"""`qwen35 profiles`: list the shipped profiles, show one, validate profile files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from qwen35.planner.errors import InputError

HELP = """Deployment profiles: YAML files that `qwen35 plan --profile` and `qwen35 launch --profile` read.

A profile names the model, precision, hardware, engine and serving settings; `extends` builds
on another file (a path relative to the profile) or a shipped profile by name. Profiles whose
name ends in -base are partial on purpose: others extend them.

**Examples**

```
qwen35 profiles list
qwen35 profiles show qwen35-397b-a17b-h200-fp8
qwen35 profiles show qwen35-397b-a17b-h200-fp8 --raw
qwen35 profiles validate my-profile.yaml other.yaml
```
"""

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="markdown")


def _summary(name: str, path: Path) -> dict:
    from qwen35.launcher.profiles import check_profile_file, is_base

    profile = check_profile_file(path)
    if profile is None or is_base(path):
        return {"name": name, "path": str(path), "base": True, "model": profile.model if profile else None}
    hardware = profile.hardware
    return {"name": name, "path": str(path), "base": False, "model": profile.model,
            "precision": profile.precision, "gpu": hardware.gpu, "count": hardware.count,
            "nodes": hardware.nodes, "engine": profile.engine.name}


@app.command("list")
def list_profiles(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List the profiles that ship with qwen35.

    **Examples**: `qwen35 profiles list`, `qwen35 profiles list --json`
    """
    from qwen35.launcher.profiles import shipped_names, shipped_path

    rows = [_summary(name, shipped_path(name)) for name in shipped_names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    for column in ("name", "model", "precision", "hardware", "engine"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        if row["base"]:
            table.add_row(row["name"], row["model"] or "", "", "(base: others extend it)", "")
            continue
        hardware = f"{row['gpu']}:{row['count']}" + (f" x{row['nodes']} nodes" if (row["nodes"] or 1) > 1 else "")
        table.add_row(row["name"], row["model"], row["precision"] or "-", hardware, row["engine"])
    Console().print(table)


@app.command("show")
def show_profile(
    name: str = typer.Argument(..., metavar="NAME", help="A shipped profile name or a profile file."),
    raw: bool = typer.Option(False, "--raw", help="Print the file as written (comments, extends) instead of the merged profile."),
    as_json: bool = typer.Option(False, "--json", help="Print the merged profile as JSON."),
) -> None:
    """Show a profile with `extends` merged and defaults filled in.

    **Examples**: `qwen35 profiles show qwen35-9b-h100-bf16`, `qwen35 profiles show ./mine.yaml --raw`
    """
    from qwen35.launcher.profiles import find_profile, is_base, load_profile, request_to_profile, to_plan_request

    path = find_profile(name)
    if raw or is_base(path):
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    profile = load_profile(path)
    data = request_to_profile(to_plan_request(profile), profile.extra_args, profile.env)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@app.command("validate")
def validate_profiles(
    files: List[Path] = typer.Argument(..., metavar="FILE", help="Profile files to check."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check profile files; print every problem as file:line:column: key: message; exit 2 if any is invalid.

    **Examples**: `qwen35 profiles validate profiles/*.yaml`, `qwen35 profiles validate mine.yaml --json`
    """
    from qwen35.launcher.profiles import ProfileError, check_profile_file
    from qwen35.launcher.profiles.loader import display_path

    results = []
    for path in files:
        try:
            check_profile_file(path)
            problems = []
        except ProfileError as error:
            problems = [str(issue) for issue in error.issues]
        except InputError as error:
            problems = [error.one_line()]
        results.append({"file": display_path(path), "valid": not problems, "problems": problems})
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for result in results:
            typer.echo(f"ok: {result['file']}" if result["valid"] else "\n".join(result["problems"]))
    if not all(result["valid"] for result in results):
        raise typer.Exit(2)


def register(root: typer.Typer) -> None:
    """Add the `profiles` command group to the CLI."""
    root.add_typer(app, name="profiles")
