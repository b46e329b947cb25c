"""Time to first token of a multi-turn chat with the prefix cache on and off, through the one engine.

    python benchmarks/prefix_cache_ttft.py [--model DIR | --shape 0.8b] [--device cpu] [--turns 6]

Each turn's prompt is the previous turn's prompt, its answer and a new user message (token ids,
as a chat template would render them), so with the cache on a turn resumes from the checkpoint
the previous turn's prefill left at its last page boundary and prefills only the rest. Every
turn runs alone (batch 1); the table shows per turn the prompt length, the tokens the cache
served and the TTFT both ways, and the greedy answers are checked to be the same. The clock is
this process's CPU time on one thread unless --wall is given, so that other load on a shared
machine does not skew the comparison.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qwen35.runtime.demo import write_demo_checkpoint
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.model.loader import load_model


def chat(model, caching: bool, system: list[int], users: list[list[int]], answer_tokens: int, chunk: int, clock):
    """(prompt length, cached tokens, TTFT seconds, answer) per turn."""
    longest = len(system) + sum(map(len, users)) + answer_tokens * len(users) + 8
    config = EngineConfig(max_running_requests=1, max_model_len=longest, prefill_chunk_size=chunk,
                          prefix_caching=caching)
    engine = LLMEngine(build_runner(model, config)[0], config)
    history, turns = list(system), []
    for user in users:
        prompt = history + user
        (seq,) = engine.add_request(prompt, [SamplingParams(temperature=0, max_tokens=answer_tokens, ignore_eos=True)])
        start, first = clock(), None
        while engine.has_work:
            engine.step()
            if first is None and seq.output_ids:
                first = clock() - start
        turns.append((len(prompt), seq.num_cached_tokens, first, list(seq.output_ids)))
        history = prompt + seq.output_ids
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a fresh demo checkpoint)")
    parser.add_argument("--shape", help="a random-weight shape instead (0.8b, 2b, 4b, 9b)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--system-tokens", type=int, default=1024)
    parser.add_argument("--user-tokens", type=int, default=48)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=512, help="prefill chunk size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole chat per setting (median TTFT)")
    parser.add_argument("--wall", action="store_true", help="wall-clock time on torch's default threads")
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.process_time
    if not args.wall:
        torch.set_num_threads(1)
    if args.shape:
        from qwen35.runtime.bench.shapes import write_shape_checkpoint
        path = Path(write_shape_checkpoint(args.shape))
    else:
        path = args.model or write_demo_checkpoint(Path(tempfile.mkdtemp()) / "demo")
    model = load_model(path, device=args.device, progress=False)
    generator = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randint(0, 248000, (n,), generator=generator).tolist()  # noqa: E731
    system, users = draw(args.system_tokens), [draw(args.user_tokens) for _ in range(args.turns)]
    runs = {caching: [] for caching in (False, True)}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for caching in (False, True):  # alternating, so a busy machine slows both alike
                runs[caching].append(chat(model, caching, system, users, args.answer_tokens, args.chunk, clock))
    off, on = runs[False][0], runs[True][0]
    assert [turn[3] for turn in on] == [turn[3] for turn in off], "cached answers differ from uncached ones"
    ttft = {caching: [statistics.median(run[i][2] for run in runs[caching]) for i in range(args.turns)]
            for caching in runs}
    print(f"{path.name}, {args.device}, {torch.get_num_threads()} threads, {'wall' if args.wall else 'CPU'} time, "
          f"chunk {args.chunk}, median of {args.repeats} runs")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'TTFT off ms':>12} {'TTFT on ms':>11} {'speed-up':>9}")
    for i, (length, cached, _, _) in enumerate(on):
        print(f"{i + 1:>4} {length:>7} {cached:>7} {ttft[False][i] * 1e3:>12.1f} {ttft[True][i] * 1e3:>11.1f} "
              f"{ttft[False][i] / ttft[True][i]:>8.2f}x")
    total_off, total_on = sum(ttft[False]), sum(ttft[True])
    print(f"all turns: {total_off * 1e3:.1f} ms off, {total_on * 1e3:.1f} ms on ({total_off / total_on:.2f}x)")


if __name__ == "__main__":
    main()
