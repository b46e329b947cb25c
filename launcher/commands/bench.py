"""`qwen35 bench`: the bundled runtime's prefill, decode and serving figures against transformers."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from qwen35.planner.errors import InputError

HELP = """Benchmark the bundled runtime on a checkpoint, with the transformers baseline in the same run.

Measures prefill latency (2K and 16K tokens), decode tokens/s at batch 1, 8 and 64 after
512-token prompts (with achieved GB/s against a measured device-to-device copy), peak memory,
and TTFT / inter-token latency under Poisson load through the real HTTP server started
in-process; then the same prefill and decode figures for transformers' Qwen3_5ForCausalLM
(fla-core kernels when installed) and the ratios. The machine, the workload and the figures
go to stdout; progress to stderr. `--quick` shrinks everything to a few tokens (CPU smoke run).

**Examples**

```
qwen35 bench --shape 0.8b --device cuda
qwen35 bench --model ./my-checkpoint --json > bench.json
qwen35 demo-model ./qwen35-demo && qwen35 bench --model ./qwen35-demo --quick
```
"""


def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint directory or hub id (local cache)."),
    shape: Optional[str] = typer.Option(None, "--shape",
                                        help="Bench a random-weight checkpoint of a real shape: 0.8b, 2b, 4b or 9b "
                                             "(written once to --shape-dir)."),
    shape_dir: Optional[Path] = typer.Option(None, "--shape-dir", help="Where --shape checkpoints are written "
                                             "(default $QWEN35_BENCH_DIR or ~/.cache/qwen35/bench)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32."),
    quick: bool = typer.Option(False, "--quick", help="Tiny workload: a few tokens each (CPU smoke run)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Run transformers on the same checkpoint."),
    server: bool = typer.Option(True, "--server/--no-server", help="Measure TTFT and ITL through the HTTP server."),
    kernels: str = typer.Option("auto", "--kernels", help="auto (Triton on CUDA, torch on CPU), triton or torch."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="Replay decode from CUDA graphs."),
    page_size: int = typer.Option(16, "--page-size", help="Tokens per KV page."),
    speculative_tokens: int = typer.Option(
        0, "--speculative-tokens", help="Also time greedy MTP speculation with this many drafts at batch 1 "
                                        "(as is, then with a head made to guess right at times)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the JSON result to this file."),
) -> None:
    """Benchmark the bundled runtime against transformers."""
    if (model is None) == (shape is None):
        raise InputError("pass exactly one of --model and --shape", "e.g. qwen35 bench --shape 0.8b")
    if page_size < 1:
        raise InputError("--page-size must be at least 1", "pass e.g. --page-size 16")
    from qwen35.runtime.bench.shapes import SHAPES, write_shape_checkpoint

    if not 0 <= speculative_tokens <= 8:
        raise InputError(f"--speculative-tokens {speculative_tokens} is out of range", "pass 0 (off) to 8; try 2")
    if shape is not None and shape.lower() not in SHAPES:
        raise InputError(f"unknown --shape {shape!r}", f"choose one of {', '.join(SHAPES)}")
    from qwen35.runtime.bench.report import render
    from qwen35.runtime.bench.run import BenchOptions, run_bench

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"bench [{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    if shape is not None:
        progress(f"random-weight {shape} checkpoint")
        model = str(write_shape_checkpoint(shape, shape_dir, progress=progress))
    options = BenchOptions(model=model, device=device, dtype=dtype, quick=quick, baseline=baseline, server=server,
                           kernels=kernels, cuda_graphs=cuda_graphs, page_size=page_size,
                           speculative_tokens=speculative_tokens)
    result = run_bench(options, progress)
    if save is not None:
        save.write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    print(json.dumps(result, indent=1) if as_json else render(result))


def register(app: typer.Typer) -> None:
    """Add `bench` to the CLI."""
    app.command("bench", help=HELP)(bench)
