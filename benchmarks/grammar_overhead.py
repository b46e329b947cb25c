"""What a grammar adds to the engine's sampling step: the Sampler with and without constrained rows.

    python benchmarks/grammar_overhead.py [--batches 1 64] [--steps 200] [--device cpu|cuda]

The engine's one sampling step (runtime/engine/sampler.py) on [B, 248320] random logits at
temperature 1, every row following a JSON schema, against the same step with no grammar, in
the same run. The constrained step's extra time is split into its two parts: llguidance
filling the B masks on the host (its parallel executor) and the device op that copies them
over and sets the refused logits to -inf. On a GPU the host fill runs while the forward is
still on the device (the runner queues it before sampling), so it is hidden up to the
forward's length; the apply is device time. When a row's grammar completes it restarts (the
timed steps always mask B live rows). The tokenizer is the demo checkpoint's (Qwen3.5's ids).
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
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS
from qwen35.runtime.engine.sampler import Sampler
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.tokenizer import Tokenizer, build_demo_tokenizer

VOCAB = 248320
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "member"],
    "additionalProperties": False,
}


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
    times = {"free": [], "constrained": [], "fill": [], "apply": []}
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
        work = [(seq.grammar.matcher, row) for row, seq in enumerate(constrained.seqs)]
        start = time.perf_counter()
        bitmask.executor.unsafe_compute_mask_ptr(work, host.data_ptr(), bitmask.words * 4, batch)
        times["fill"].append(time.perf_counter() - start)
        logits = base.clone()
        sync(device)
        start = time.perf_counter()
        bitmask._apply(logits, host)
        sync(device)
        times["apply"].append(time.perf_counter() - start)
    return {f"{name}_ms": statistics.median(values[5:]) * 1e3 for name, values in times.items()}


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
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| batch | step, no grammar (ms) | step, json_schema (ms) | ratio | llguidance fill (ms) | "
          "mask apply (ms) | per row and token (us) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        extra = row["constrained_ms"] - row["free_ms"]
        print(f"| {row['batch']} | {row['free_ms']:.2f} | {row['constrained_ms']:.2f} | "
              f"{row['constrained_ms'] / row['free_ms']:.2f}x | {row['fill_ms']:.3f} | {row['apply_ms']:.3f} | "
              f"{extra / row['batch'] * 1e3:.0f} |")


if __name__ == "__main__":
    main()
