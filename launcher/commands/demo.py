"""`qwen35 demo-model`: write a tiny random-weight Qwen3.5 checkpoint to try everything without a download."""
from __future__ import annotations

import json
from pathlib import Path

import typer

HELP = """Write a tiny random-weight Qwen3.5 checkpoint (about 40 MB) in the Hugging Face layout.

It has the real file set (config.json, two safetensors shards with their index, tokenizer,
chat template, processor configs) and every tensor name of a real checkpoint, at toy sizes.
Its answers are noise; use it to try `plan`, `serve` and the API without a download.
Progress goes to stderr; the checkpoint's path goes to stdout.

**Examples**

```
qwen35 demo-model ./qwen35-demo
qwen35 demo-model ./qwen35-demo --seed 7 --force
qwen35 demo-model /tmp/demo --shape small --json
```
"""


def demo_model(
    directory: Path = typer.Argument(..., metavar="DIR", show_default=False,
                                     help="Where to write the checkpoint (a new or empty directory)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the weights; the same seed gives the same files."),
    shape: str = typer.Option("tiny", "--shape", help="Model size: tiny (hidden 64, 4 layers) or small."),
    force: bool = typer.Option(False, "--force",
                               help="Replace an existing checkpoint in DIR (one with a config.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the path and file list as JSON."),
) -> None:
    """Write a tiny random-weight Qwen3.5 checkpoint."""
    from rich.console import Console

    from qwen35.runtime.demo import write_demo_checkpoint

    console = Console(stderr=True)
    with console.status("writing the demo checkpoint") as status:
        path = write_demo_checkpoint(directory, seed=seed, shape=shape, overwrite=force,
                                     progress=lambda step: status.update(step))
    console.print(f"wrote a {shape} demo checkpoint (seed {seed})", highlight=False)
    if as_json:
        files = sorted(entry.name for entry in path.iterdir())
        typer.echo(json.dumps({"path": str(path), "shape": shape, "seed": seed, "files": files}, indent=2))
    else:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the `demo-model` command to the CLI."""
    app.command("demo-model", help=HELP)(demo_model)
