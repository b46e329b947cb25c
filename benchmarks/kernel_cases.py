"""Workloads for the runtime's Triton kernels at real Qwen3.5 shapes, each with its torch reference.

A Case builds its inputs on a device in a dtype, runs the Triton kernel or the reference on
them (state pools are updated in place: callers pass fresh copies, see fresh(), when checking),
and knows the fewest bytes the kernel must move. A Triton run writes into inputs["out"] when
that is given, so a check can poison the output first. Shared by benchmarks/kernels.py (GPU: check and time) and
benchmarks/kernel_compile.py (CPU: compile every launch for sm_90).
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


def ensure_import_root() -> None:
    """Make `qwen35` importable from this checkout when the package is not installed."""
    try:
        import qwen35  # noqa: F401
    except ImportError:
        root = types.ModuleType("qwen35")
        root.__path__ = [str(Path(__file__).resolve().parents[1])]
        sys.modules["qwen35"] = root


ensure_import_root()

from qwen35.runtime.kernels.causal_conv1d import reference as conv_ref  # noqa: E402
from qwen35.runtime.kernels.gated_delta_rule import reference as gdr_ref  # noqa: E402
from qwen35.runtime.kernels.gated_rmsnorm import reference as gated_norm_ref  # noqa: E402
from qwen35.runtime.kernels.paged_attention import reference as paged_ref  # noqa: E402
from qwen35.runtime.kernels.rmsnorm import reference as norm_ref  # noqa: E402
from qwen35.runtime.kernels.silu_mul import reference as silu_ref  # noqa: E402


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of one Qwen3.5 text model that the kernels see (no tensor parallelism)."""

    name: str
    hidden: int
    ffn: int
    q_heads: int
    kv_heads: int
    v_heads: int
    k_heads: int = 16
    head_k_dim: int = 128
    head_dim: int = 256


MODELS = {
    "0.8B": ModelShape("0.8B", hidden=1024, ffn=3584, q_heads=8, kv_heads=2, v_heads=16),
    "9B": ModelShape("9B", hidden=4096, ffn=12288, q_heads=16, kv_heads=4, v_heads=32),
    "397B": ModelShape("397B-A17B", hidden=4096, ffn=1024, q_heads=32, kv_heads=2, v_heads=64),
}


@dataclass
class Case:
    """One kernel at one workload: inputs, the fast and reference runs, and the byte floor."""

    kernel: str
    workload: str
    make_inputs: Callable[[torch.device, torch.dtype], dict]
    fast: Callable[[dict], tuple]
    reference: Callable[[dict], tuple]
    min_bytes: Callable[[dict], int]
    fla: Callable[[dict], Callable[[], object] | None] | None = None
    graphable: bool = True  # the host side never syncs, so a CUDA graph can capture it


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def fresh(inputs: dict) -> dict:
    """Clone the tensors a kernel mutates (pools), so every run starts from the same state."""
    return {k: v.clone() if k.endswith("pool") else v for k, v in inputs.items()}


# ---- gated delta rule ----------------------------------------------------------------------

def _gdr_inputs(shape: ModelShape, lengths: list[int], decode: bool):
    hk, hv, d = shape.k_heads, shape.v_heads, shape.head_k_dim

    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(0)
        tokens = len(lengths) if decode else sum(lengths)
        # q, k, v are views into one conv output row, as the model slices them.
        mixed = torch.randn(tokens, (2 * hk + hv) * d, generator=gen).to(device, dtype)
        q = mixed[:, :hk * d].view(tokens, hk, d)
        k = mixed[:, hk * d:2 * hk * d].view(tokens, hk, d)
        v = mixed[:, 2 * hk * d:].view(tokens, hv, d)
        num_slots = len(lengths) + 7
        inputs = dict(
            q=q, k=k, v=v,
            a=torch.randn(tokens, hv, generator=gen).to(device, dtype),
            b=torch.randn(tokens, hv, generator=gen).to(device, dtype),
            A_log=torch.empty(hv).uniform_(0, 16, generator=gen).log().to(device),
            dt_bias=torch.rand(hv, generator=gen).to(device),
            state_pool=(torch.randn(num_slots, hv, d, d, generator=gen) * 0.1).to(device),
            slots=torch.randperm(num_slots, generator=gen)[:len(lengths)].to(device, torch.int32),
        )
        if not decode:
            cu = torch.tensor([0] + lengths).cumsum(0)
            inputs["cu_seqlens"] = cu.to(device, torch.int32)
        return inputs
    return make


def _gdr_verify_inputs(shape: ModelShape, rows: int, tokens_per_row: int):
    """A speculative verify: rows x T tokens, state read from the rows' slots (q, k, v as conv-output views)."""
    flat = _gdr_inputs(shape, [1] * (rows * tokens_per_row), True)

    def make(device, dtype):
        x = flat(device, dtype)
        hk, hv, d = shape.k_heads, shape.v_heads, shape.head_k_dim
        for name, heads in (("q", hk), ("k", hk), ("v", hv)):
            x[name] = x[name].view(rows, tokens_per_row, heads, d)
        x["a"], x["b"] = x["a"].view(rows, tokens_per_row, hv), x["b"].view(rows, tokens_per_row, hv)
        x["slots"] = x["slots"][:rows].contiguous()
        x["accepted"] = torch.arange(rows, dtype=torch.int32).remainder(tokens_per_row).add(1).to(device)
        return x
    return make


def _gdr_verify_fast(x):
    from qwen35.runtime.kernels.gated_delta_rule import triton_verify
    args = (x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"], x["state_pool"], x["slots"])
    out = triton_verify.fused_recurrent_gated_delta_rule_verify(*args, out=x.get("out"))
    triton_verify.fused_recurrent_gated_delta_rule_commit(*args, x["accepted"])
    return out, x["state_pool"]


def _gdr_verify_ref(x):
    args = (x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"], x["state_pool"], x["slots"])
    out = gdr_ref.fused_recurrent_gated_delta_rule_verify(*args)
    gdr_ref.fused_recurrent_gated_delta_rule_commit(*args, x["accepted"])
    return out, x["state_pool"]


def _gdr_decode_fast(x):
    from qwen35.runtime.kernels.gated_delta_rule.triton_decode import fused_recurrent_gated_delta_rule_update
    out = fused_recurrent_gated_delta_rule_update(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"],
                                                  x["dt_bias"], x["state_pool"], x["slots"], out=x.get("out"))
    return out, x["state_pool"]


def _gdr_decode_ref(x):
    out = gdr_ref.fused_recurrent_gated_delta_rule_update(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"],
                                                          x["dt_bias"], x["state_pool"], x["slots"])
    return out, x["state_pool"]


def _gdr_prefill_fast(x):
    from qwen35.runtime.kernels.gated_delta_rule.triton_prefill import chunk_gated_delta_rule_varlen
    out = chunk_gated_delta_rule_varlen(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"],
                                        x["cu_seqlens"], x["state_pool"], x["slots"], out=x.get("out"))
    return out, x["state_pool"]


def _gdr_prefill_ref(x):
    out = gdr_ref.chunk_gated_delta_rule_varlen(x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"],
                                                x["cu_seqlens"], x["state_pool"], x["slots"])
    return out, x["state_pool"]


def _gdr_bytes(x):
    state = x["state_pool"][0].numel() * 4 * 2 * x["slots"].numel()
    out = x["v"].numel() * x["v"].element_size()
    return state + _nbytes(x["q"], x["k"], x["v"], x["a"], x["b"]) + out


def _fla_gdr(x, decode: bool):
    """fla-core's kernel on the same math (gates, gather and head repeat done outside the timing)."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except ImportError:
        return None
    g, beta = gdr_ref.gdn_gates(x["a"], x["b"], x["A_log"], x["dt_bias"])
    group = x["v"].shape[1] // x["q"].shape[1]
    q, k = (t.repeat_interleave(group, dim=1).contiguous() for t in (x["q"], x["k"]))
    v = x["v"].contiguous()
    state = x["state_pool"][x["slots"].long()].contiguous()
    beta = beta.to(q.dtype)
    if decode:  # fla wants [B, T, H, D]: one token per row
        return lambda: fused_recurrent_gated_delta_rule(
            q[:, None], k[:, None], v[:, None], g=g[:, None], beta=beta[:, None],
            initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    cu = x["cu_seqlens"].long()
    return lambda: chunk_gated_delta_rule(
        q[None], k[None], v[None], g=g[None], beta=beta[None], initial_state=state,
        output_final_state=True, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)


# ---- causal conv1d -------------------------------------------------------------------------

def _conv_inputs(shape: ModelShape, lengths: list[int], decode: bool):
    dim = 2 * shape.k_heads * shape.head_k_dim + shape.v_heads * shape.head_k_dim

    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(1)
        tokens = len(lengths) if decode else sum(lengths)
        num_slots = len(lengths) + 7
        inputs = dict(
            x=torch.randn(tokens, dim, generator=gen).to(device, dtype),
            weight=(torch.randn(dim, 4, generator=gen) * 0.5).to(device, dtype),
            state_pool=torch.randn(num_slots, dim, 3, generator=gen).to(device, dtype),
            slots=torch.randperm(num_slots, generator=gen)[:len(lengths)].to(device, torch.int32),
        )
        if not decode:
            inputs["cu_seqlens"] = torch.tensor([0] + lengths).cumsum(0).to(device, torch.int32)
        return inputs
    return make


def _conv_varlen_fast(x):
    from qwen35.runtime.kernels.causal_conv1d.triton import causal_conv1d_varlen
    out = causal_conv1d_varlen(x["x"], x["weight"], x["cu_seqlens"], x["state_pool"], x["slots"], out=x.get("out"))
    return out, x["state_pool"]


def _conv_varlen_ref(x):
    return conv_ref.causal_conv1d_varlen(x["x"], x["weight"], x["cu_seqlens"], x["state_pool"], x["slots"]), \
        x["state_pool"]


def _conv_update_fast(x):
    from qwen35.runtime.kernels.causal_conv1d.triton import causal_conv1d_update
    out = causal_conv1d_update(x["x"], x["weight"], x["state_pool"], x["slots"], out=x.get("out"))
    return out, x["state_pool"]


def _conv_update_ref(x):
    return conv_ref.causal_conv1d_update(x["x"], x["weight"], x["state_pool"], x["slots"]), x["state_pool"]


def _conv_verify_inputs(shape: ModelShape, rows: int, tokens_per_row: int):
    """A speculative verify's conv: rows x T tokens ([rows, T, D]) after the rows' slots, pool not written."""
    flat = _conv_inputs(shape, [1] * rows, True)

    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(6)
        inputs = flat(device, dtype)
        dim = inputs["x"].shape[-1]
        inputs["x"] = torch.randn(rows, tokens_per_row, dim, generator=gen).to(device, dtype)
        return inputs
    return make


def _conv_verify_fast(x):
    from qwen35.runtime.kernels.causal_conv1d.triton import causal_conv1d_verify
    return causal_conv1d_verify(x["x"], x["weight"], x["state_pool"], x["slots"])


def _conv_verify_ref(x):
    return conv_ref.causal_conv1d_verify(x["x"], x["weight"], x["state_pool"], x["slots"])


def _conv_verify_bytes(x):
    states = x["slots"].numel() * x["state_pool"][0].numel() * x["state_pool"].element_size()
    # x in, out and the window's copy of x written, the rows' states read and copied into the window.
    return 3 * _nbytes(x["x"]) + _nbytes(x["weight"]) + 2 * states


def _conv_bytes(x):
    states = x["slots"].numel() * x["state_pool"][0].numel() * x["state_pool"].element_size() * 2
    return 2 * _nbytes(x["x"]) + _nbytes(x["weight"]) + states


# ---- norms, activation, attention ----------------------------------------------------------

def _rows_inputs(rows: int, width: int, names: tuple[str, ...], weight: int | None, seed: int):
    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        inputs = {n: torch.randn(rows, width, generator=gen).to(device, dtype) for n in names}
        if weight is not None:
            inputs["weight"] = (torch.randn(weight, generator=gen) * 0.2).to(device, dtype)
        return inputs
    return make


def _paged_inputs(shape: ModelShape, batch: int, context: int, page_size: int):
    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(2)
        pages_per_seq = -(-context // page_size)
        num_pages = batch * pages_per_seq + 3
        cache = (num_pages, page_size, shape.kv_heads, shape.head_dim)
        lens = torch.randint(context // 2, context + 1, (batch,), generator=gen)
        lens[0] = context
        return dict(
            q=torch.randn(batch, shape.q_heads, shape.head_dim, generator=gen).to(device, dtype),
            k_cache=torch.randn(cache, generator=gen).to(device, dtype),
            v_cache=torch.randn(cache, generator=gen).to(device, dtype),
            block_tables=torch.randperm(num_pages, generator=gen)[:batch * pages_per_seq]
            .view(batch, pages_per_seq).to(device, torch.int32),
            seq_lens=lens.to(device, torch.int32),
        )
    return make


def _paged_fast(x):
    from qwen35.runtime.kernels.paged_attention.triton import paged_decode_attention
    return (paged_decode_attention(x["q"], x["k_cache"], x["v_cache"], x["block_tables"], x["seq_lens"],
                                   out=x.get("out")),)


def _paged_bytes(x):
    kv_row = x["k_cache"].shape[2] * x["k_cache"].shape[3] * x["k_cache"].element_size() * 2
    return int(x["seq_lens"].sum()) * kv_row + 2 * _nbytes(x["q"])


def _paged_prefill_inputs(shape: ModelShape, chunks: list[tuple[int, int]], page_size: int):
    """A packed prefill: per sequence (new tokens, tokens cached before), every K/V already in its pages."""
    def make(device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(4)
        totals = [new + cached for new, cached in chunks]
        pages = [-(-total // page_size) for total in totals]
        num_pages = sum(pages) + 3
        cache = (num_pages, page_size, shape.kv_heads, shape.head_dim)
        order = torch.randperm(num_pages, generator=gen)
        tables = torch.full((len(chunks), max(pages)), num_pages - 1, dtype=torch.int32)
        start = 0
        for i, count in enumerate(pages):
            tables[i, :count] = order[start:start + count].to(torch.int32)
            start += count
        news = [new for new, _ in chunks]
        return dict(
            q=torch.randn(sum(news), shape.q_heads, shape.head_dim, generator=gen).to(device, dtype),
            k_pages=torch.randn(cache, generator=gen).to(device, dtype),
            v_pages=torch.randn(cache, generator=gen).to(device, dtype),
            block_tables=tables.to(device),
            cu_seqlens=torch.tensor([0] + list(torch.tensor(news).cumsum(0)), dtype=torch.int32).to(device),
            cached_lens=torch.tensor([cached for _, cached in chunks], dtype=torch.int32).to(device),
        )
    return make


def _paged_prefill_fast(x):
    from qwen35.runtime.kernels.paged_prefill_attention.triton import paged_prefill_attention
    return (paged_prefill_attention(x["q"], x["k_pages"], x["v_pages"], x["block_tables"], x["cu_seqlens"],
                                    x["cached_lens"], out=x.get("out")),)


def _paged_prefill_ref(x):
    from qwen35.runtime.kernels.paged_prefill_attention.reference import paged_prefill_attention
    return (paged_prefill_attention(x["q"], x["k_pages"], x["v_pages"], x["block_tables"], x["cu_seqlens"],
                                    x["cached_lens"]),)


def _paged_prefill_bytes(x):
    kv_row = x["k_pages"].shape[2] * x["k_pages"].shape[3] * x["k_pages"].element_size() * 2
    news = x["cu_seqlens"].diff()
    return int((news + x["cached_lens"]).sum()) * kv_row + 2 * _nbytes(x["q"])


def _gated_rmsnorm_fast(x):
    from qwen35.runtime.kernels.gated_rmsnorm.triton import gated_rmsnorm
    return (gated_rmsnorm(x["x"], x["gate"], x["weight"], 1e-6, out=x.get("out")),)


def _add_rmsnorm_fast(x):
    from qwen35.runtime.kernels.rmsnorm.triton import add_rmsnorm
    return add_rmsnorm(x["x"], x["residual"], x["weight"], 1e-6, out=x.get("out"))


def _silu_mul_fast(x):
    from qwen35.runtime.kernels.silu_mul.triton import silu_mul
    return (silu_mul(x["x"], out=x.get("out")),)


def build_cases(shape: ModelShape, tiny: bool = False) -> list[Case]:
    """Every kernel at decode and prefill sizes of `shape`; tiny=True shrinks the token counts."""
    batches = [1, 5] if tiny else [1, 32, 128]
    prefill = [[63, 1, 130]] if tiny else [[4096], [512] * 8, [16384]]
    rows = 63 if tiny else 4096
    contexts = [(1, 300), (3, 130)] if tiny else [(1, 32768), (32, 4096), (128, 2048)]
    cases = []
    for b in batches:
        cases.append(Case("gdr_decode", f"B={b}", _gdr_inputs(shape, [1] * b, True), _gdr_decode_fast,
                          _gdr_decode_ref, _gdr_bytes, lambda x: _fla_gdr(x, True)))
    for lens in prefill:
        cases.append(Case("gdr_prefill", f"{len(lens)}x{lens[0]}" if len(set(lens)) == 1 else str(lens),
                          _gdr_inputs(shape, lens, False), _gdr_prefill_fast, _gdr_prefill_ref, _gdr_bytes,
                          lambda x: _fla_gdr(x, False), graphable=False))
    for lens in prefill:
        cases.append(Case("conv_varlen", f"T={sum(lens)}", _conv_inputs(shape, lens, False), _conv_varlen_fast,
                          _conv_varlen_ref, _conv_bytes, graphable=False))
    for b in batches:
        cases.append(Case("conv_update", f"B={b}", _conv_inputs(shape, [1] * b, True), _conv_update_fast,
                          _conv_update_ref, _conv_bytes))
    for t in (batches[-1], rows):
        n = t * shape.v_heads
        cases.append(Case("gated_rmsnorm", f"rows={n}", _rows_inputs(n, shape.head_k_dim, ("x", "gate"), 128, 3),
                          _gated_rmsnorm_fast,
                          lambda x: (gated_norm_ref.gated_rmsnorm(x["x"], x["gate"], x["weight"], 1e-6),),
                          lambda x: 3 * _nbytes(x["x"])))
        cases.append(Case("add_rmsnorm", f"T={t}", _rows_inputs(t, shape.hidden, ("x", "residual"), shape.hidden, 4),
                          _add_rmsnorm_fast,
                          lambda x: norm_ref.add_rmsnorm(x["x"], x["residual"], x["weight"], 1e-6),
                          lambda x: 4 * _nbytes(x["x"])))
        cases.append(Case("silu_mul", f"T={t}", _rows_inputs(t, 2 * shape.ffn, ("x",), None, 5),
                          _silu_mul_fast, lambda x: (silu_ref.silu_mul(x["x"]),),
                          lambda x: _nbytes(x["x"]) * 3 // 2))
    for batch, context in contexts:
        cases.append(Case("paged_attention", f"B={batch} ctx={context}", _paged_inputs(shape, batch, context, 16),
                          _paged_fast,
                          lambda x: (paged_ref.paged_decode_attention(x["q"], x["k_cache"], x["v_cache"],
                                                                      x["block_tables"], x["seq_lens"]),),
                          _paged_bytes))
    for rows in ([3] if tiny else [1, 32]):
        cases.append(Case("gdr_verify", f"B={rows} T=4", _gdr_verify_inputs(shape, rows, 4), _gdr_verify_fast,
                          _gdr_verify_ref, _gdr_bytes, graphable=False))
        cases.append(Case("conv_verify", f"B={rows} T=4", _conv_verify_inputs(shape, rows, 4), _conv_verify_fast,
                          _conv_verify_ref, _conv_verify_bytes, graphable=False))
    prefill_chunks = [[(63, 0), (17, 40), (1, 9)]] if tiny else [[(2048, 0)], [(2048, 14336)], [(512, 2048)] * 8]
    for chunks in prefill_chunks:
        cases.append(Case("paged_prefill", " ".join(f"{new}+{cached}" for new, cached in chunks[:2])
                          + (f" x{len(chunks)}" if len(chunks) > 2 else ""),
                          _paged_prefill_inputs(shape, chunks, 16), _paged_prefill_fast, _paged_prefill_ref,
                          _paged_prefill_bytes, graphable=False))
    return cases
