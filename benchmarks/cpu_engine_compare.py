"""CPU speed of the bundled engine in two checkouts, in one run: decode at batch 1 and 8, a 512-token prefill.

Each checkout is benched by its own `.venv` with the same small workload (the bench's own
code: prefill and decode through its engine, no server, no baseline), alternating between the
two `--rounds` times; the table shows each figure's best (least disturbed) and median round. By default the bench's clock is
the process's CPU time on one thread (`--wall` for wall time on `--threads`), so that other load
on a shared machine does not skew the comparison. Used to check that an engine change does not
regress on CPU.

    python benchmarks/cpu_engine_compare.py --before /tmp/base --after . --shape 0.8b
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

# Run inside each checkout's venv: its own bench code on a workload both versions can express.
DRIVER = """
import json, sys, time
import torch
if sys.argv[4] == "cpu":  # the bench's timer becomes this process's CPU time
    time.perf_counter = time.process_time
from dataclasses import replace
from qwen35.runtime.bench import workloads, run
cpu = replace(workloads.QUICK, prefill_lengths=(512,), decode_batches=(1, 8), prompt_len=128, decode_steps=12,
              prefill_chunk=512, repeats=2)
run.QUICK = cpu
torch.set_num_threads(int(sys.argv[3]))
options = run.BenchOptions(model=sys.argv[1], device="cpu", quick=True, baseline=False, server=False,
                           speculative_tokens=0)
result = run.run_bench(options)
print(json.dumps({"prefill_ms": result["ours"]["prefill"][0]["ms"],
                  "decode_step_ms": {str(row["batch"]): row["step_ms"] for row in result["ours"]["decode"]}}))
"""


def bench_once(checkout: Path, model: Path, threads: int, clock: str) -> dict:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run([str(python), "-c", DRIVER, str(model), str(checkout), str(threads), clock], cwd=checkout,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench in {checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="checkout with a .venv (the old engine)")
    parser.add_argument("--after", type=Path, default=Path("."), help="checkout with a .venv (the new engine)")
    parser.add_argument("--shape", default="0.8b", help="random-weight shape to bench (written once)")
    parser.add_argument("--model", type=Path, help="a checkpoint instead of --shape")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="time wall-clock instead of CPU time")
    args = parser.parse_args()
    clock = "wall" if args.wall else "cpu"
    model = args.model
    if model is None:
        python = args.after.resolve() / ".venv" / "bin" / "python"
        model = Path(subprocess.run([str(python), "-c", "from qwen35.runtime.bench.shapes import write_shape_checkpoint as w; "
                                     f"print(w('{args.shape}'))"], capture_output=True, text=True, check=True,
                                    cwd=args.after).stdout.strip().splitlines()[-1])
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for round_index in range(args.rounds):
        for name, checkout in (("before", args.before), ("after", args.after)):
            runs[name].append(bench_once(checkout.resolve(), model, args.threads, clock))
            print(f"round {round_index + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
    figures = {"prefill 512 ms": lambda r: r["prefill_ms"], "decode b1 ms/step": lambda r: r["decode_step_ms"]["1"],
               "decode b8 ms/step": lambda r: r["decode_step_ms"]["8"]}
    print(f"\n{args.rounds} rounds, {model.name}, {args.threads} threads, {clock} time")
    print(f"{'figure':<20}{'best before':>12}{'best after':>11}{'ratio':>7}{'median before':>15}{'median after':>13}{'ratio':>7}")
    for label, pick in figures.items():
        best = [min(map(pick, runs[name])) for name in ("before", "after")]
        middle = [statistics.median(map(pick, runs[name])) for name in ("before", "after")]
        print(f"{label:<20}{best[0]:>12.1f}{best[1]:>11.1f}{best[1] / best[0]:>7.2f}"
              f"{middle[0]:>15.1f}{middle[1]:>13.1f}{middle[1] / middle[0]:>7.2f}")

if __name__ == "__main__":
    main()
