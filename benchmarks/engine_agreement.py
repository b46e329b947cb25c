"""Engine-vs-reference greedy agreement on a CUDA GPU, over 256 tokens per prompt.

The engine with the Triton kernel set and CUDA-graph decode against the same engine with the
torch reference kernels (the correctness oracle, itself held to transformers by the CPU tests),
both driven by LLMEngine.step: prompts of awkward lengths (page and chunk boundaries), chunked
prefill, fewer slots than prompts (slots and pages reused). fp32 must match token for token (exit 1 otherwise); bf16
and graphs-vs-eager are reported with their first divergence. The checkpoint's matrices are
redrawn at O(1/sqrt(fan_in)) first, so greedy decoding does not collapse to one repeated token.

    python benchmarks/engine_agreement.py --model DIR [--tokens 256] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import torch

from qwen35.runtime.bench.agreement import compare_engines, first_divergence, greedy_generate, spread_weights
from qwen35.runtime.bench.workloads import random_prompts
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.model.loader import load_model

PROMPT_LENGTHS = (1, 15, 16, 17, 63, 64, 65, 200, 333, 1000)
ROWS = 4
CHUNK = 128


def _prompts(vocab: int) -> list[list[int]]:
    return [random_prompts(1, n, seed=1000 + n, vocab=vocab)[0] for n in PROMPT_LENGTHS]


def agreement(model_dir: str, dtype: torch.dtype, tokens: int) -> dict:
    """Triton + graphs vs torch-reference tokens, and Triton graphs vs Triton eager, for one dtype."""
    model = load_model(model_dir, device="cuda", dtype=dtype, progress=False)
    spread_weights(model, seed=0)
    prompts = _prompts(model.config.text.vocab_size)
    config = EngineConfig(max_running_requests=ROWS, max_model_len=max(PROMPT_LENGTHS) + tokens + 8,
                          prefill_chunk_size=CHUNK, kernels="triton")
    start = time.perf_counter()
    reference = replace(config, kernels="torch", cuda_graphs=False)
    result = compare_engines(model, config, reference, prompts, tokens)
    graphs = greedy_generate(model, config, prompts, tokens)
    eager = greedy_generate(model, replace(config, cuda_graphs=False), prompts, tokens)
    result["graphs_vs_eager_first_divergence"] = [first_divergence(a, b) for a, b in zip(graphs, eager)]
    result.update(dtype=str(dtype).removeprefix("torch."), seconds=time.perf_counter() - start)
    del model
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    """Run fp32 and bf16; print a table; exit 1 when fp32 tokens differ."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--json", default=None, help="write results here (default $OUT/agreement.json)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("engine_agreement.py needs a CUDA GPU; on CPU run tests/runtime/engine", file=sys.stderr)
        return 2
    # fp32 means fp32: cuDNN's conv (the reference's causal conv) defaults to TF32 on Ampere and later.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    results = [agreement(args.model, dtype, args.tokens) for dtype in (torch.float32, torch.bfloat16)]
    print(f"{'dtype':<9} {'all match':>9} {'first divergence per prompt (None = all ' + str(args.tokens) + ')'}")
    for r in results:
        print(f"{r['dtype']:<9} {str(r['all_match']):>9} {[p['first_divergence'] for p in r['prompts']]}  "
              f"graphs vs eager {r['graphs_vs_eager_first_divergence']}  ({r['seconds']:.0f} s)")
    path = args.json or (os.path.join(os.environ["OUT"], "agreement.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump({"prompt_lengths": PROMPT_LENGTHS, "rows": ROWS, "chunk": CHUNK, "results": results}, f, indent=1)
    return 0 if results[0]["all_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
