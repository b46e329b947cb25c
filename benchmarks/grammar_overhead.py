"""What a grammar adds to the engine's sampling step: the Sampler with and without constrained rows.

    python benchmarks/grammar_overhead.py [--batches 1 64] [--steps 200] [--device cpu|cuda]

The engine's one sampling step (runtime/engine/sampler.py) on [B, 248320] random logits at
temperature 1, every row following a JSON schema, against the same step with no grammar (the schema of grammar_backends.py), in
the same run. The constrained step's extra time is split into its two parts: llguidance
filling the B masks on the host (one row after another) and the device op that copies them
over and sets the refused logits to -inf. On a GPU the host fill runs while the forward is
still on the device (the runner queues it before sampling), so it is hidden up to the
forward's length; the apply is device time. In the last CLOSING_HORIZON tokens of a request's
max_tokens the fill also works out the way to close the grammar (runtime/engine/grammar/matcher.py);
that fill is timed too, on the same states. When a row's grammar completes it restarts (the
timed steps always mask B live rows). The tokenizer is the demo checkpoint's (Qwen3.5's ids).
The whole-step times of the two runs differ by less than their noise on a shared machine; the
fill and apply, timed on their own, are the cost. On a loaded CPU, OMP_NUM_THREADS=1 keeps
torch's threads from waiting on each other.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from qwen35.runtime.engine.grammar.compiler import GrammarCompiler
from qwen35.runtime.engine.grammar.constraints import json_schema_constraint
from qwen35.runtime.engine.grammar.matcher import CLOSING_HORIZON
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS
from qwen35.runtime.engine.sampler import Sampler
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.tokenizer import Tokenizer, build_demo_tokenizer

from grammar_backends import SCHEMA, VOCAB  # the same json_schema workload


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Rows:
    """B sequences in their slots of one Sampler, with or without a grammar each."""

    def __init__(self, batch: int, device: torch.device, compiled):
        self.sampler = Sampler(batch, VOCAB, device, seed=0)
        self.compiled = compiled
        params = SamplingParams(temperature=1.0, max_tokens=1 << 30)
        self.seqs = [Sequence(i, [1, 2, 3], params) for i in range(batch)]
        for slot, seq in enumerate(self.seqs):
            seq.slot = slot
            self.sampler.start(seq)
            seq.grammar = compiled.matcher() if compiled is not None else None

    def step(self, logits: torch.Tensor) -> None:
        """One sampling step; a completed grammar restarts, so every step masks all rows."""
        for seq in self.seqs:
            if seq.grammar is not None and seq.grammar.is_terminated:
                seq.grammar = self.compiled.matcher()
        token_ids, _ = self.sampler.sample(logits, self.seqs)
        for seq, tokens in zip(self.seqs, token_ids):
            seq.output_ids += tokens


def run(batch: int, steps: int, device: torch.device, compiled) -> dict:
    """Median ms per sampling step without and with a grammar (interleaved, so drift hits both), and of the
    constrained step's fill and apply parts."""
    free, constrained = Rows(batch, device, None), Rows(batch, device, compiled)
    base = torch.randn(batch, VOCAB, device=device, generator=torch.Generator(device).manual_seed(0)) * 2
    times = {"free": [], "constrained": [], "fill": [], "fill_near_budget": [], "apply": []}
    for _ in range(steps):
        for name, rows in (("free", free), ("constrained", constrained)):
            logits = base.clone()
            sync(device)
            start = time.perf_counter()
            rows.step(logits)
            sync(device)
            times[name].append(time.perf_counter() - start)
        # The two parts on their own, on the state the next constrained step masks.
        bitmask, host = constrained.sampler.bitmask, constrained.sampler.bitmask._buffer(batch)
        start = time.perf_counter()
        for row, seq in enumerate(constrained.seqs):
            seq.grammar.fill_masks(host[row].data_ptr(), bitmask.words * 4)
        times["fill"].append(time.perf_counter() - start)
        # The same fill inside the closing horizon: the way to close each grammar is worked out too.
        start = time.perf_counter()
        for row, seq in enumerate(constrained.seqs):
            seq.grammar.budget = CLOSING_HORIZON
            seq.grammar.fill_masks(host[row].data_ptr(), bitmask.words * 4)
        times["fill_near_budget"].append(time.perf_counter() - start)
        for seq in constrained.seqs:
            seq.grammar.budget, seq.grammar.closing, seq.grammar._next_check = None, None, CLOSING_HORIZON
        logits = base.clone()
        sync(device)
        start = time.perf_counter()
        bitmask._apply(logits, host)
        sync(device)
        times["apply"].append(time.perf_counter() - start)
    return {f"{name}_ms": statistics.median(values[5:]) * 1e3 for name, values in times.items()}


def closing_workings(compiler, max_tokens: int = 200, requests: int = 8) -> float:
    """How many times per json_object request cut by max_tokens the way to close is worked out (random logits at
    temperature 1, so strings stay open until the closing)."""
    from qwen35.runtime.engine.grammar import matcher as matcher_module
    from qwen35.runtime.engine.grammar.constraints import json_object_constraint

    compiled, _ = compiler.compile(json_object_constraint())
    sampler = Sampler(requests, VOCAB, torch.device("cpu"), seed=0)
    params = SamplingParams(temperature=1.0, max_tokens=max_tokens)
    seqs = [Sequence(i, [1, 2, 3], params) for i in range(requests)]
    for slot, seq in enumerate(seqs):
        seq.slot = slot
        sampler.start(seq)
        seq.grammar = compiled.matcher(budget=max_tokens)
    calls, original = [0], matcher_module.closing_path

    def counted(*args):
        calls[0] += 1
        return original(*args)

    matcher_module.closing_path = counted
    try:
        generator = torch.Generator().manual_seed(0)
        for _ in range(max_tokens):
            live = [seq for seq in seqs if seq.grammar.budget > 0 and not seq.grammar.is_terminated]
            if not live:
                break
            sampler.sample(torch.randn(len(live), VOCAB, generator=generator) * 2, live)
    finally:
        matcher_module.closing_path = original
    return calls[0] / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    compiler = GrammarCompiler.for_tokenizer(Tokenizer(build_demo_tokenizer()), VOCAB, DEFAULT_STOP_TOKEN_IDS)
    compiled, _ = compiler.compile(json_schema_constraint(SCHEMA))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, GPU {gpu}, torch {torch.__version__}; "
          f"sampling [B, {VOCAB}] at temperature 1 on {device}, {args.steps} steps (median)", flush=True)
    rows = []
    for batch in args.batches:
        rows.append({"batch": batch, **run(batch, args.steps, device, compiled)})
    workings = closing_workings(compiler)
    if args.json:
        print(json.dumps({"rows": rows, "closing_workings_per_request": workings}, indent=2))
        return
    print("| batch | step, no grammar (ms) | step, json_schema (ms) | llguidance fill (ms) | "
          "fill, a step working out the closing (ms) | mask apply (ms) | fill + apply, share of the free step |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        mask = row["fill_ms"] + row["apply_ms"]
        print(f"| {row['batch']} | {row['free_ms']:.2f} | {row['constrained_ms']:.2f} | {row['fill_ms']:.3f} | "
              f"{row['fill_near_budget_ms']:.3f} | {row['apply_ms']:.3f} | {mask / row['free_ms']:.1%} |")
    print(f"json_object requests of max_tokens 200 (random logits): the way to close worked out {workings:.1f} "
          f"times per request")

if __name__ == "__main__":
    main()
