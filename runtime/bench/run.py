"""One `qwen35 bench` run: baseline first (it needs the memory the pools take later), then ours, then the server."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from qwen35.runtime.bench.baseline import bench_baseline
from qwen35.runtime.bench.agreement import guessing_mtp_head
from qwen35.runtime.bench.engine_bench import bench_decode, bench_prefill, bench_speculative
from qwen35.runtime.bench.machine import copy_bandwidth, machine_info, peak_memory, reset_peak_memory
from qwen35.runtime.bench.report import ratios
from qwen35.runtime.bench.server_load import poisson_load
from qwen35.runtime.bench.workloads import FULL, QUICK, Workload
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.checkpoint import resolve_checkpoint_dir
from qwen35.runtime.model.loader import load_model, resolve_dtype
from qwen35.runtime.server.launch import resolve_device
from qwen35.runtime.tokenizer.tokenizer import load_tokenizer
from qwen35.runtime.server.launch import resolve_dtype as resolve_dtype_name


@dataclass
class BenchOptions:
    """What `qwen35 bench` was asked for."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    quick: bool = False
    baseline: bool = True
    server: bool = True
    kernels: str = "auto"
    cuda_graphs: bool = True
    page_size: int = 16
    speculative_tokens: int = 0  # > 0: also time greedy MTP speculation at batch 1 (needs the MTP head)


def _model_summary(model, root: Path, dtype: torch.dtype) -> dict:
    text = model.config.text
    text_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    if model.lm_head is not None:
        text_bytes += sum(p.numel() * p.element_size() for p in model.lm_head.parameters())
    return {"path": str(root), "dtype": str(dtype).removeprefix("torch."),
            "params": sum(p.numel() for p in model.parameters()), "text_weight_bytes": text_bytes,
            "hidden_size": text.hidden_size, "layers": text.num_hidden_layers, "moe": text.is_moe}


def _engine(model, root: Path, workload: Workload, options: BenchOptions, speculative_tokens: int = 0,
            max_running: int | None = None, max_len: int | None = None) -> tuple[LLMEngine, dict]:
    """An engine whose pools are sized like the server's: measured free memory on CUDA, every slot full on CPU."""
    config = EngineConfig(max_running_requests=max_running or workload.max_batch, max_model_len=max_len or workload.max_len,
                          max_queue=workload.server_requests, prefill_chunk_size=workload.prefill_chunk,
                          max_prefill_tokens=workload.prefill_chunk, page_size=options.page_size,
                          speculative_tokens=speculative_tokens, kernels=options.kernels,
                          cuda_graphs=options.cuda_graphs)
    runner, sizing = build_runner(model, config)
    tokenizer = load_tokenizer(root) if (root / "tokenizer.json").is_file() else None
    eos = sorted(set(DEFAULT_STOP_TOKEN_IDS) | set(model.config.text.eos_token_ids))
    return LLMEngine(runner, config, tokenizer, eos), sizing


@torch.inference_mode()
def run_bench(options: BenchOptions, progress: Callable[[str], None] = lambda message: None) -> dict:
    """Every figure of the bench as one JSON-ready dict (machine, workload, ours, baseline, server, ratios)."""
    device = torch.device(resolve_device(options.device))
    dtype = resolve_dtype(resolve_dtype_name(options.dtype, device.type))
    workload = QUICK if options.quick else FULL
    root = resolve_checkpoint_dir(options.model)
    result: dict = {"machine": machine_info(device), "workload": asdict(workload)}
    progress("measuring device-to-device copy bandwidth")
    result["copy_gbs"] = copy_bandwidth(device)
    if options.baseline:
        progress("transformers baseline")
        result["baseline"] = bench_baseline(root, workload, device, dtype)
    progress("loading the model and sizing the pools")
    reset_peak_memory(device)
    model = load_model(root, device=device, dtype=dtype, progress=False)
    result["model"] = _model_summary(model, root, dtype)
    engine, sizing = _engine(model, root, workload, options)
    result["sizing"] = sizing
    progress("prefill")
    ours = {"kernels": engine.runner.kernels.name, "cuda_graphs": engine.runner.graphs is not None,
            "prefill": bench_prefill(engine, workload, device)}
    progress("decode")
    ours["decode"] = bench_decode(engine, workload, device, result["copy_gbs"])
    ours["peak_memory_bytes"] = peak_memory(device)
    ours["pool_bytes"] = sizing["allocated_bytes"]
    if device.type == "cuda":
        ours["peak_excluding_pools_bytes"] = ours["peak_memory_bytes"] - sizing["allocated_bytes"]
    result["ours"] = ours
    if options.server:
        progress("server under Poisson load")
        result["server"] = poisson_load(engine, root, workload)
    if options.speculative_tokens:
        progress("MTP speculation")
        del engine  # its pools go back before the speculative engine measures free memory
        result["speculative"] = _bench_speculation(model, root, workload, options, device)
    result["ratios"] = ratios(result)
    return result


def _bench_speculation(model, root: Path, workload: Workload, options: BenchOptions, device: torch.device) -> dict:
    """Batch-1 greedy MTP twice: on the checkpoint as it is, then with a head that guesses right at times.

    Random-weight checkpoints never agree with their MTP head, so the first figure is the cost of
    speculation alone; guessing_mtp_head (which changes the weights: it runs last) gives a partial
    acceptance, whose speed-up over plain decode is what a real checkpoint's acceptance buys.
    """
    if model.mtp is None:
        return {"skipped": "the checkpoint has no MTP head"}
    k = options.speculative_tokens
    max_len = workload.prompt_len + (workload.decode_steps + 3) * (k + 1) + 8
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.empty_cache()
    engine, _ = _engine(model, root, workload, options, speculative_tokens=k, max_running=1, max_len=max_len)
    as_is = bench_speculative(engine, workload, device)
    guessing_mtp_head(model)
    guessing = bench_speculative(engine, workload, device)
    return {"as_is": as_is, "guessing_head": guessing}
