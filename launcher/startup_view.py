"""Render the plan-vs-engine check of `qwen35 launch`: a short table, the phases to ready, and warnings."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from qwen35.launcher.startup_figures import (GRAPHS_CAPTURED, LABELS, MEMORY_FRACTION, SERVING, WEIGHTS_LOADED,
                                             EngineFigures, FigureCheck)

PHASE_ORDER = (WEIGHTS_LOADED, GRAPHS_CAPTURED, SERVING)


def _shown(name: str, value: float | None) -> str:
    if value is None:
        return "not stated"
    return f"{value:.3f}" if name == MEMORY_FRACTION else f"{int(value)}"


def phases_line(figures: EngineFigures) -> str:
    """'time to ready: weights loaded 38.2 s, graphs captured 60.3 s, serving 68.1 s' (the phases seen)."""
    seen = [f"{phase} {figures.phases[phase]:.1f} s" for phase in PHASE_ORDER if phase in figures.phases]
    return "time to ready: " + ", ".join(seen)


def warning_lines(rows: list[FigureCheck], tolerance: float) -> list[str]:
    """One line per figure off by more than the tolerance: both values, the difference, cause and flag."""
    lines = []
    for row in rows:
        if row.off(tolerance):
            lines.append(f"{LABELS[row.name]}: the engine has {_shown(row.name, row.engine)}, the plan "
                         f"{_shown(row.name, row.planned)} ({row.difference:+.1%}): {row.hint}")
    return lines


def render_check(rows: list[FigureCheck], figures: EngineFigures, engine: str, tolerance: float,
                 console: Console) -> None:
    """The table (or a line saying the log stated nothing), the phases, and the warnings."""
    if all(row.engine is None for row in rows):
        console.print(f"plan check: {engine}'s log stated none of the start-up figures qwen35 reads", markup=False)
    else:
        table = Table(title=f"{engine} at start-up vs the plan", title_justify="left", box=None, pad_edge=False)
        for header in ("figure", "plan", "engine", "difference"):
            table.add_column(header, justify="left" if header == "figure" else "right")
        for row in rows:
            difference = "" if row.difference is None else f"{row.difference:+.1%}"
            style = "yellow" if row.off(tolerance) else None
            table.add_row(LABELS[row.name], _shown(row.name, row.planned), _shown(row.name, row.engine), difference,
                          style=style)
        console.print(table)
    console.print(phases_line(figures), markup=False)
    for line in warning_lines(rows, tolerance):
        console.print(f"warning: {line}", markup=False, soft_wrap=True)

