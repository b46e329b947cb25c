"""Compile every Triton launch of the runtime's kernels for an NVIDIA target, without a GPU.

Runs each benchmark case (tiny token counts, real head sizes) on CPU tensors with the kernels
swapped for recorders, then compiles each recorded launch, with the same specialisation Triton
would use at run time, for sm_90 (H100/H200) and reads the resource usage off the cubin:
registers per thread, local memory (spills), shared memory. Catches code that the Triton
interpreter accepts but the compiler rejects, and register spills, on a machine with no GPU.

    python benchmarks/kernel_compile.py [--arch 90] [--models 0.8B] [--dtypes bf16] [--json]

Must run without TRITON_INTERPRET=1 (interpreted kernels cannot be compiled). Exit 3 when
this Triton lacks the launch internals used here (written against 3.9); exit 1 when a
launch fails to compile, or a 16-bit launch spills (fp32 inputs use exact IEEE products, a
slow test-only path whose spills are reported but allowed). Slow: minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch


class _Recorder:
    """Stands in for a JITFunction: kernel[grid](*args, **kwargs) records instead of launching."""

    def __init__(self, fn, launches: list):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.fn, args, kwargs))


def record_launches(cases, dtypes) -> list:
    """(kernel, args, kwargs) of every launch the cases make, one per distinct specialisation."""
    import importlib

    from triton.runtime.jit import JITFunction

    launches: list = []
    modules = ["rmsnorm.triton", "gated_rmsnorm.triton", "silu_mul.triton", "causal_conv1d.triton",
               "gated_delta_rule.triton_decode", "gated_delta_rule.triton_prefill", "paged_attention.triton",
               "paged_prefill_attention.triton", "gated_delta_rule.triton_verify"]
    for name in modules:
        module = importlib.import_module(f"qwen35.runtime.kernels.{name}")
        for attr, value in vars(module).items():
            if isinstance(value, JITFunction) and attr.endswith("_kernel"):
                setattr(module, attr, _Recorder(value, launches))
    for case in cases:
        for dtype in dtypes:
            case.fast(case.make_inputs(torch.device("cpu"), dtype))
    return launches


def compile_launch(fn, args, kwargs, arch: int):
    """Compile one launch for cuda:arch exactly as JITFunction.run would specialise it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compiled, {k: v for k, v in zip(signature, bound.values()) if signature[k] == "constexpr"}


def resource_usage(cubin: bytes) -> dict:
    """REG, STACK, LOCAL and SHARED of the one function in a cubin, via cuobjdump."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def main(argv: list[str] | None = None) -> int:
    """Compile all launches; print one line each (or JSON); exit 1 on a failure or a spill."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    parser.add_argument("--models", default="0.8B,9B,397B")
    parser.add_argument("--dtypes", default="bf16,fp32", help="activation dtypes to record launches in")
    parser.add_argument("--kernels", default="", help="comma list of case kernels to keep (default all)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    try:
        from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: F401
        JITFunction._pack_args  # noqa: B018 - Triton internals this script leans on (3.9)
    except (ImportError, AttributeError) as exc:
        print(f"this Triton's launch internals differ from 3.9's ({exc}); adjust compile_launch", file=sys.stderr)
        return 3
    from kernel_cases import MODELS, build_cases

    keep = {k for k in args.kernels.split(",") if k}
    cases = [c for m in args.models.split(",") for c in build_cases(MODELS[m], tiny=True)
             if not keep or c.kernel in keep]
    dtypes = [{"bf16": torch.bfloat16, "fp32": torch.float32}[d] for d in args.dtypes.split(",")]
    seen, results = set(), []
    for fn, launch_args, kwargs in record_launches(cases, dtypes):
        started = time.perf_counter()
        try:
            compiled, constexprs = compile_launch(fn, launch_args, kwargs, args.arch)
        except Exception as exc:  # noqa: BLE001 - reported per launch
            results.append({"kernel": fn.__name__, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            continue
        key = (fn.__name__, compiled.hash)
        if key in seen:
            continue
        seen.add(key)
        usage = resource_usage(compiled.asm["cubin"])
        dtype = next(str(a.dtype).removeprefix("torch.") for a in launch_args if isinstance(a, torch.Tensor)
                     and a.is_floating_point())
        results.append({"kernel": fn.__name__, "dtype": dtype, "compile_s": round(time.perf_counter() - started, 1),
                        "constexprs": {k: str(v) for k, v in constexprs.items()},
                        "num_warps": compiled.metadata.num_warps, "num_stages": compiled.metadata.num_stages,
                        "shared_bytes": compiled.metadata.shared, **usage})
    # Spills fail only the 16-bit launches: fp32 inputs take exact IEEE products, a test-only path.
    ok = all("error" not in r and (r["dtype"] == "float32" or r.get("LOCAL", 0) + r.get("STACK", 0) == 0)
             for r in results)
    if args.json:
        print(json.dumps({"arch": args.arch, "ok": ok, "launches": results}, indent=1))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['kernel']:<28} FAILED {r['error']}")
            else:
                spec = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
                print(f"{r['kernel']:<26} {r['dtype']:<8} REG {r.get('REG'):>3} LOCAL {r.get('LOCAL')} "
                      f"STACK {r.get('STACK'):>5} SHARED {r['shared_bytes']:>6} warps {r['num_warps']} "
                      f"({r['compile_s']} s)  {spec}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
