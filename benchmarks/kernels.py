"""Check and time the runtime's Triton kernels at real Qwen3.5 shapes on a CUDA GPU.

For every kernel and workload: relative error against the torch reference in fp32 and bf16
(outputs and updated state pools, poisoned-output and NaN checks included), then the median
time (triton.testing.do_bench, which flushes L2 before each run) of the Triton kernel, the
torch reference and, for the gated delta rule, fla-core when it is importable. Achieved GB/s
counts the fewest bytes the kernel must move and is compared with a device-to-device copy
measured in the same run. Decode-step kernels are also timed as CUDA-graph replays (launch
gaps removed, L2 not flushed), the way the runtime runs them. Prints a table; writes
kernels.json under $OUT (or --json PATH). Exit 1 when a kernel misses its error tolerance.

    python benchmarks/kernels.py                 # 0.8B and 9B shapes
    python benchmarks/kernels.py --models 9B --kernels gdr_decode,paged_attention
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys

import torch

from kernel_cases import MODELS, Case, build_cases, fresh

# Relative error allowed against the reference: fp32 kernels run IEEE fp32 products; bf16 runs
# round inputs/outputs (and the gated delta rule's intermediates) to bf16 and use TF32 products.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out holds a NaN."""
    if out.isnan().any():
        return math.inf
    ref = ref.double()
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(case: Case, dtype: torch.dtype) -> float:
    """Worst relative error over the case's outputs (state pools included) against the reference."""
    inputs = case.make_inputs(torch.device("cuda"), dtype)
    ref = case.reference(fresh(inputs))
    # Poisoned output: an element the kernel fails to write stays NaN and fails the check.
    fast = case.fast({**fresh(inputs), "out": torch.full_like(ref[0], math.nan)})
    torch.cuda.synchronize()
    return max(rel_err(f, r) for f, r in zip(fast, ref))


def bench(fn) -> float:
    """Median milliseconds of fn, L2 flushed before each run."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_graph(fn) -> float:
    """Median milliseconds of fn replayed from a CUDA graph (no launch gaps; L2 stays warm)."""
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(fn, rep=50, return_mode="median")


def copy_bandwidth() -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    src = torch.randn(256 * 2**20, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / ms / 1e6


def run_case(case: Case, copy_gbs: float) -> dict:
    """Check in fp32 and bf16, then time in bf16: one result row."""
    row = {"kernel": case.kernel, "workload": case.workload}
    for dtype, key in ((torch.float32, "err_fp32"), (torch.bfloat16, "err_bf16")):
        row[key] = check(case, dtype)
        row[f"ok_{key[4:]}"] = row[key] <= TOLERANCE[dtype]
    inputs = case.make_inputs(torch.device("cuda"), torch.bfloat16)
    # Pools are updated in place run after run (the recurrence stays finite): no copies timed.
    row["triton_ms"] = bench(lambda: case.fast(inputs))
    row["graph_ms"] = _guarded(row, "graph", lambda: bench_graph(lambda: case.fast(inputs))) \
        if case.graphable else None
    row["torch_ms"] = bench(lambda: case.reference(inputs))
    fla = _guarded(row, "fla", lambda: case.fla(inputs)) if case.fla else None
    row["fla_ms"] = _guarded(row, "fla", lambda: bench(fla)) if fla is not None else None
    nbytes = case.min_bytes(inputs)
    row["min_bytes"] = nbytes
    row["gbs"] = nbytes / row["triton_ms"] / 1e6
    row["bw_share"] = row["gbs"] / copy_gbs
    row["speedup_vs_torch"] = row["torch_ms"] / row["triton_ms"]
    row["speedup_vs_fla"] = row["fla_ms"] / row["triton_ms"] if row["fla_ms"] else None
    return row


def _guarded(row: dict, what: str, fn):
    """fn(), or None with the error noted in the row: a baseline failing must not stop the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - recorded, shown in the JSON
        row[f"{what}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return None


def machine() -> dict:
    """GPU, driver and library versions, for the report header."""
    import triton

    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton.__version__, "python": platform.python_version(),
            "driver": _driver_version()}


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - the header just leaves it out
        return None


def render(rows: list[dict], copy_gbs: float) -> str:
    """The result table as fixed-width text."""
    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    head = (f"{'model':<6} {'kernel':<16} {'workload':<22} {'err fp32':>9} {'err bf16':>9} {'triton ms':>10} "
            f"{'graph ms':>9} {'torch ms':>9} {'fla ms':>8} {'x torch':>8} {'x fla':>6} {'GB/s':>7} {'of copy':>7}")
    lines = [f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write); GB/s below: fewest bytes / triton ms;"
             " x fla / x torch: their ms over triton ms; errors: relative, vs the torch reference", head,
             "-" * len(head)]
    for r in rows:
        flag = "" if r["ok_fp32"] and r["ok_bf16"] else "  <-- FAILS TOLERANCE"
        lines.append(
            f"{r['model']:<6} {r['kernel']:<16} {r['workload']:<22} {r['err_fp32']:>9.1e} {r['err_bf16']:>9.1e} "
            f"{r['triton_ms']:>10.4f} {fmt(r['graph_ms'], '>9.4f')} {r['torch_ms']:>9.3f} {fmt(r['fla_ms'], '>8.4f')} "
            f"{r['speedup_vs_torch']:>8.1f} {fmt(r['speedup_vs_fla'], '>6.2f')} {r['gbs']:>7.0f} "
            f"{r['bw_share']:>7.0%}{flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the checks and timings; exit 1 when a kernel misses its error tolerance."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="0.8B,9B", help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--kernels", default="", help="comma list of kernel names to keep (default all)")
    parser.add_argument("--json", default=None, help="write results here (default $OUT/kernels.json)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU; on CPU run the tests "
              "(tests/runtime/kernels) or benchmarks/kernel_compile.py", file=sys.stderr)
        return 2
    keep = {k for k in args.kernels.split(",") if k}
    header = machine()
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    copy_gbs = copy_bandwidth()
    rows = []
    for name in args.models.split(","):
        for case in build_cases(MODELS[name]):
            if keep and case.kernel not in keep:
                continue
            row = {"model": name, **run_case(case, copy_gbs)}
            rows.append(row)
            print(f"{name} {case.kernel} {case.workload}: {row['triton_ms']:.4f} ms, "
                  f"err {row['err_fp32']:.1e}/{row['err_bf16']:.1e}", file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
    print(render(rows, copy_gbs))
    path = args.json or (os.path.join(os.environ["OUT"], "kernels.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump({"machine": header, "copy_gbs": copy_gbs, "rows": rows}, f, indent=1)
    return 0 if all(r["ok_fp32"] and r["ok_bf16"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
