"""The transformers baseline on the same checkpoint: Qwen3_5ForCausalLM (fla-core kernels when importable)."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from qwen35.runtime.bench.machine import peak_memory, reset_peak_memory, synchronize, time_ms
from qwen35.runtime.bench.workloads import Workload, random_prompts


def baseline_kernels() -> str:
    """Which linear-attention kernels transformers will use here."""
    return "fla-core" if importlib.util.find_spec("fla") is not None else "torch fallback"


def load_baseline(path: str | Path, device: torch.device, dtype: torch.dtype):
    """transformers' Qwen3_5ForCausalLM (or the MoE one) from a Qwen3.5 checkpoint directory, eval mode."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    text_config = getattr(config, "text_config", config)
    moe = "moe" in text_config.model_type
    cls = transformers.Qwen3_5MoeForCausalLM if moe else transformers.Qwen3_5ForCausalLM
    model = cls.from_pretrained(path, config=text_config, dtype=dtype).to(device)
    return model.eval()


def _generate_ms(model, prompts: torch.Tensor, new_tokens: int, device: torch.device, repeats: int) -> float:
    def run() -> None:
        model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    return time_ms(run, device, repeats=repeats, warmup=1)


def _measure(model, workload: Workload, device: torch.device) -> tuple[list[dict], list[dict]]:
    """(prefill rows, decode rows) of one loaded transformers model."""
    vocab = model.config.vocab_size
    prefill = []
    for index, length in enumerate(workload.prefill_lengths):
        ids = torch.tensor(random_prompts(1, length, seed=100 + index, vocab=vocab), device=device)
        ms = time_ms(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1), device,
                     repeats=workload.repeats, warmup=1)
        prefill.append({"tokens": length, "ms": ms, "tokens_per_s": length / ms * 1e3})
    decode = []
    steps = workload.decode_steps
    repeats = max(1, min(workload.repeats, 2))
    for batch in workload.decode_batches:
        prompts = random_prompts(batch, workload.prompt_len, seed=200 + batch, vocab=vocab)
        ids = torch.tensor(prompts, device=device)
        # generate(n) - generate(1): the prompt's prefill and first token drop out, `steps` decode steps stay.
        start = time.perf_counter()
        first = _generate_ms(model, ids, 1, device, repeats)
        total = _generate_ms(model, ids, steps + 1, device, repeats)
        step_ms = max(total - first, 1e-9) / steps
        decode.append({"batch": batch, "prompt_tokens": workload.prompt_len, "steps": steps, "step_ms": step_ms,
                       "tokens_per_s": batch / step_ms * 1e3, "wall_s": time.perf_counter() - start})
    return prefill, decode


@torch.inference_mode()
def bench_baseline(path: str | Path, workload: Workload, device: torch.device, dtype: torch.dtype) -> dict:
    """Prefill latency and decode tokens/s of transformers on the workload; an `error` entry if it cannot run."""
    result = {"implementation": f"transformers Qwen3_5ForCausalLM ({baseline_kernels()})"}
    try:
        import transformers

        result["transformers"] = transformers.__version__
        reset_peak_memory(device)
        model = load_baseline(path, device, dtype)
    except Exception as error:  # noqa: BLE001 - a missing or too old transformers is reported, not fatal
        result["error"] = f"{type(error).__name__}: {error}"
        return result
    try:
        prefill, decode = _measure(model, workload, device)
        synchronize(device)
        result.update(prefill=prefill, decode=decode, peak_memory_bytes=peak_memory(device))
    except Exception as error:  # noqa: BLE001 - the baseline failing must not lose our figures
        result["error"] = f"{type(error).__name__}: {error}"
    del model
    reset_peak_memory(device)  # hands the baseline's memory back before the runtime sizes its pools
    return result
