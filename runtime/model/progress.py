"""The loading progress bar: one step per shard, drawn with rich on stderr."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def shard_progress(shards: list[Path], description: str, enabled: bool = True) -> Iterator[Path]:
    """Yield the shards in order, advancing a stderr progress bar after each (silent if not enabled)."""
    if not enabled:
        yield from shards
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("shards"), TimeElapsedColumn(), TextColumn("{task.fields[shard]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=len(shards), shard="")
        for shard in shards:
            bar.update(task, shard=shard.name)
            yield shard
            bar.advance(task)
