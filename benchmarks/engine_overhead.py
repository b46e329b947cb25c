"""Host-side cost of one AsyncEngine step, with a model that costs nothing.

    python benchmarks/engine_overhead.py [--batches 1 8 64] [--tokens 256] [--vocab 248320]

On a GPU a decode step of the 0.8B shape is about a millisecond (PERF.md), so what the engine
does around the model (schedule, stage inputs, sample, read the tokens back, detokenize, stop
checks, hand outputs to the event loop) must stay well below that for the runner's speed to
reach clients. Here the runner returns preallocated logits at once (through the real sampler), so the measured time per
step is that surrounding work alone: the host ceiling on tokens/s for that batch, whatever the
GPU. Sampling is greedy over the given vocabulary on the CPU (on a GPU it is a launch and the
read-back sync); detokenization uses the demo checkpoint's real tokenizer.

--model-ms M makes every forward wait M ms without holding the GIL, as a thread waiting on a
GPU does: the step time less M is then the host work the model could not hide.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time

import torch

from qwen35.runtime.demo import write_demo_checkpoint
from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.stand_in import LogitsRunner
from qwen35.runtime.tokenizer.tokenizer import load_tokenizer


class FreeRunner(LogitsRunner):
    """Ready-made logits: every sequence's argmax walks through `token_ids`."""

    def __init__(self, num_slots: int, max_len: int, vocab_size: int, token_ids: list[int], model_s: float = 0.0):
        super().__init__(num_slots, max_len, vocab_size)
        self.model_s = model_s
        self.table = []
        for token in token_ids:  # one [slots, V] tensor per token to emit, cycled through
            logits = torch.zeros(num_slots, vocab_size)
            logits[:, token] = 1.0
            self.table.append(logits)
        self.calls = 0

    def logits(self, seqs) -> torch.Tensor:
        self.calls += 1
        if self.model_s:
            time.sleep(self.model_s)  # a GPU forward's wall time, the GIL released as in a CUDA sync
        return self.table[self.calls % len(self.table)][:len(seqs)]


async def measure(runner: FreeRunner, max_len: int, tokenizer, batch: int, tokens: int) -> dict:
    """Seconds per engine step while `batch` sequences decode `tokens` tokens each."""
    config = EngineConfig(max_running_requests=batch, max_queue=batch, max_model_len=max_len)
    engine = AsyncEngine(LLMEngine(runner, config, tokenizer))
    await engine.start()
    try:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        prompt = list(range(1000, 1016))
        handles = [engine.submit(prompt, [params])[0] for _ in range(batch)]
        first = [await handle.__anext__() for handle in handles]  # every sequence decoding
        steps_before, start = engine.engine.steps, time.perf_counter()

        async def drain(handle) -> int:
            return sum([len(output.token_ids) async for output in handle])

        received = sum(await asyncio.gather(*(drain(h) for h in handles))) + sum(len(o.token_ids) for o in first)
        seconds = time.perf_counter() - start
        steps = engine.engine.steps - steps_before
    finally:
        await engine.stop()
    assert received == batch * tokens, (received, batch * tokens)
    return {"batch": batch, "steps": steps, "us_per_step": seconds / steps * 1e6,
            "host_tokens_per_s": batch * steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--tokens", type=int, default=256, help="tokens each sequence decodes")
    parser.add_argument("--vocab", type=int, default=248320, help="logits width (Qwen3.5: 248320)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-ms", type=float, default=0.0, help="wall time of each forward (GIL released)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = load_tokenizer(write_demo_checkpoint(os.path.join(directory, "demo"), seed=0))
    # Ordinary words, so detokenization does its usual work (no special tokens, no byte fallback).
    token_ids = tokenizer.encode(" the engine emits one ordinary word after another for the benchmark")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    print(f"workload: greedy, {args.tokens} tokens per sequence, vocab {args.vocab}, model {args.model_ms} ms "
          f"per forward (median of {args.repeats})")
    print(f"{'batch':>6} {'steps':>6} {'us/step':>9} {'us/step beyond model':>21} {'tok/s':>9}")
    for batch in args.batches:
        max_len = args.tokens + 32
        runs = [asyncio.run(measure(FreeRunner(batch, max_len, args.vocab, token_ids, args.model_ms / 1e3), max_len,
                                    tokenizer, batch, args.tokens)) for _ in range(args.repeats)]
        best = sorted(runs, key=lambda r: r["us_per_step"])[len(runs) // 2]
        exposed = best["us_per_step"] - args.model_ms * 1e3
        print(f"{batch:>6} {best['steps']:>6} {best['us_per_step']:>9.0f} {exposed:>21.0f} "
              f"{best['host_tokens_per_s']:>9,.0f}")
    if args.vocab > 1024:
        print("sampling here runs on the CPU over the full vocabulary; compare with --vocab 1024 to separate it out")


if __name__ == "__main__":
    main()
