"""The bundled runtime's figures: prefill latency and decode throughput of the paged runner."""
from __future__ import annotations

import time

import torch

from qwen35.runtime.bench.machine import synchronize, time_ms
from qwen35.runtime.bench.workloads import Workload, decode_step_bytes, random_prompts
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.sampling import SamplingBatch, SamplingParams


def bench_prefill(runner: PagedModelRunner, workload: Workload, device: torch.device) -> list[dict]:
    """Median latency of prefilling one prompt of each length (chunked by workload.prefill_chunk)."""
    rows = []
    chunk = workload.prefill_chunk
    for index, length in enumerate(workload.prefill_lengths):
        (prompt,) = random_prompts(1, length, seed=100 + index, vocab=runner.vocab_size)

        def run() -> None:
            for start in range(0, length, chunk):
                runner.prefill(0, prompt[start:start + chunk])

        ms = time_ms(run, device, repeats=workload.repeats, warmup=1, setup=lambda: runner.reset_row(0))
        runner.release_row(0)
        rows.append({"tokens": length, "chunk": min(chunk, length), "ms": ms, "tokens_per_s": length / ms * 1e3})
    return rows


def _prefill_rows(runner: PagedModelRunner, prompts: list[list[int]], chunk: int) -> list[int]:
    """Prefill every row's prompt in packed batches of at most `chunk` tokens; the first greedy tokens."""
    for row in range(len(prompts)):
        runner.reset_row(row)
    firsts, group, size = [], [], 0
    for row, prompt in enumerate(prompts + [None]):
        if prompt is None or (group and size + len(prompt) > chunk):
            logits = runner.prefill_batch(group, [prompts[r] for r in group])
            firsts += logits.argmax(dim=-1).tolist()
            group, size = [], 0
        if prompt is not None:
            group.append(row)
            size += len(prompt)
    return firsts


def bench_decode(runner: PagedModelRunner, workload: Workload, device: torch.device, copy_gbs: float) -> list[dict]:
    """Decode tokens/s at each batch size after workload.prompt_len-token prompts (greedy, synced per step)."""
    rows = []
    steps = workload.decode_steps
    for batch in workload.decode_batches:
        prompts = random_prompts(batch, workload.prompt_len, seed=200 + batch, vocab=runner.vocab_size)
        tokens = _prefill_rows(runner, prompts, max(workload.prefill_chunk, workload.prompt_len))
        active = list(range(batch))
        for _ in range(2):  # warm-up: first replays, allocator growth
            tokens = runner.decode(active, tokens).argmax(dim=-1).tolist()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            # argmax + tolist: the host sync every engine step pays to read its tokens.
            tokens = runner.decode(active, tokens).argmax(dim=-1).tolist()
        seconds = time.perf_counter() - start
        for row in active:
            runner.release_row(row)
        step_ms = seconds / steps * 1e3
        context = workload.prompt_len + 2 + steps // 2  # mean tokens cached over the timed steps
        nbytes = decode_step_bytes(runner.model, batch, context)
        gbs = nbytes / step_ms / 1e6
        rows.append({"batch": batch, "prompt_tokens": workload.prompt_len, "steps": steps, "step_ms": step_ms,
                     "tokens_per_s": batch * steps / seconds, "bytes_per_step": nbytes, "gbs": gbs,
                     "copy_share": gbs / copy_gbs if copy_gbs else None})
    return rows


def bench_speculative(runner, workload: Workload, device: torch.device) -> dict:
    """Greedy MTP speculation at batch 1 after a workload.prompt_len prompt: tokens/s and acceptance.

    `runner` is a PagedSpeculativeRunner with one row. Every step drafts k tokens, verifies them in
    one forward and keeps the accepted ones plus one; tokens/s counts what the client would get.
    """
    k = runner.num_speculative_tokens
    (prompt,) = random_prompts(1, workload.prompt_len, seed=300, vocab=runner.vocab_size)
    runner.reset_row(0)
    token = int(runner.prefill(0, prompt).argmax())
    greedy = SamplingBatch.from_params([SamplingParams(temperature=0.0)], [0], device)

    def step(token: int) -> list[int]:
        return runner.speculate([0], [token], greedy).token_ids[0]

    for _ in range(2):  # warm-up: first launches, allocator growth
        token = step(token)[-1]
    drafted = accepted = emitted = 0
    synchronize(device)
    start = time.perf_counter()
    for _ in range(workload.decode_steps):
        result = runner.speculate([0], [token], greedy)
        tokens = result.token_ids[0]
        token, emitted, accepted = tokens[-1], emitted + len(tokens), accepted + result.num_accepted[0]
        drafted += result.num_drafted
    seconds = time.perf_counter() - start
    runner.release_row(0)
    return {"speculative_tokens": k, "batch": 1, "steps": workload.decode_steps, "tokens": emitted,
            "step_ms": seconds / workload.decode_steps * 1e3, "tokens_per_s": emitted / seconds,
            "acceptance": accepted / drafted if drafted else None}
