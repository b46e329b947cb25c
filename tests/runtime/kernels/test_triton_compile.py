"""Every Triton kernel compiles for the H100 (sm_90) at Qwen3.5-0.8B shapes without register spills.

No GPU needed: benchmarks/kernel_compile.py records the launches the kernels make and compiles
them with Triton's CUDA backend (ptxas ships with Triton). The interpreter, which the other
kernel tests use on CPU, accepts some code the compiler rejects; this catches it. It leans on
Triton internals (3.9's launch binder), so a Triton upgrade may need the script adjusted.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
HAS_CUDA = torch.cuda.is_available()

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "kernel_compile.py"


def _cuda_backend_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        return False
    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.skipif(not _cuda_backend_available(), reason="Triton's CUDA backend (with ptxas) is not installed")
@pytest.mark.skipif(HAS_CUDA, reason="with a GPU the other kernel tests compile and run every kernel for real")
def test_kernels_compile_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--models", "0.8B", "--dtypes", "bf16", "--json"],
                            capture_output=True, text=True, env=env, timeout=600)
    if result.returncode == 3:
        pytest.skip(result.stderr.strip())
    assert result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout)
    failures = [r for r in report["launches"] if "error" in r or r.get("LOCAL", 0) + r.get("STACK", 0)]
    assert not failures, json.dumps(failures, indent=1)[:3000]
    assert report["ok"] and result.returncode == 0
    compiled = {r["kernel"] for r in report["launches"]}
    assert {"_recurrent_decode_kernel", "_intra_chunk_kernel", "_chunk_state_kernel", "_chunk_output_kernel",
            "_conv_varlen_kernel", "_conv_final_state_kernel", "_conv_update_kernel", "_gated_rmsnorm_kernel",
            "_rmsnorm_kernel", "_silu_mul_kernel", "_paged_decode_kernel", "_merge_splits_kernel",
            "_paged_prefill_kernel", "_recurrent_verify_kernel", "_conv_verify_kernel"} <= compiled
