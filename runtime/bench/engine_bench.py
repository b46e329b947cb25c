"""The bundled runtime's figures, measured through the engine's own step: prefill latency, decode and
speculative decode throughput.

Every figure runs `LLMEngine.step` (schedule -> run -> sample -> postprocess), so it includes
what serving pays per step on the host, not just the model's forward. Requests are greedy and
ignore the end-of-sequence token, so their lengths are exactly what the workload asks.
"""
from __future__ import annotations

import time

import torch

from qwen35.planner.errors import Qwen35Error
from qwen35.runtime.bench.machine import synchronize, time_ms
from qwen35.runtime.bench.workloads import Workload, decode_step_bytes, random_prompts
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.sequence import Sequence, Status


def _greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def _step(engine: LLMEngine) -> list:
    """One engine step; a failed step fails the bench (its figures would be figures of nothing)."""
    outputs = engine.step()
    for _, output in outputs:
        if output.finish_reason == "error":
            raise Qwen35Error(f"an engine step failed during the bench ({output.error})",
                              "the engine's traceback is in the log above; no figures were kept")
    return outputs


def _until_decoding(engine: LLMEngine, seqs: list[Sequence]) -> None:
    """Step until every sequence has its prompt cached and its first token."""
    while any(seq.status is not Status.DECODING or not seq.output_ids for seq in seqs):
        _step(engine)


def _drain(engine: LLMEngine, seqs: list[Sequence]) -> None:
    """End the sequences (their slots and pages go back)."""
    for seq in seqs:
        engine.abort(seq)
    while engine.has_work:
        _step(engine)


def bench_prefill(engine: LLMEngine, workload: Workload, device: torch.device) -> list[dict]:
    """Median latency of prefilling one prompt of each length (chunked by the engine's prefill chunk) to its first token."""
    rows = []
    vocab = engine.runner.vocab_size
    for index, length in enumerate(workload.prefill_lengths):
        # A new prompt every run (warm-up included): a repeated one would be served by the prefix cache.
        prompts = iter(random_prompts(workload.repeats + 1, length, seed=100 + index, vocab=vocab))

        def run() -> None:
            engine.add_request(next(prompts), [_greedy(1)])
            while engine.has_work:
                _step(engine)

        ms = time_ms(run, device, repeats=workload.repeats, warmup=1)
        rows.append({"tokens": length, "chunk": min(engine.config.prefill_chunk_size, length), "ms": ms,
                     "tokens_per_s": length / ms * 1e3})
    return rows


def bench_decode(engine: LLMEngine, workload: Workload, device: torch.device, copy_gbs: float) -> list[dict]:
    """Decode tokens/s at each batch size after workload.prompt_len-token prompts (one engine step per token)."""
    rows = []
    steps = workload.decode_steps
    model = engine.runner.model
    for batch in workload.decode_batches:
        prompts = random_prompts(batch, workload.prompt_len, seed=200 + batch, vocab=engine.runner.vocab_size)
        seqs = [engine.add_request(prompt, [_greedy(steps + 8)])[0] for prompt in prompts]
        _until_decoding(engine, seqs)
        for _ in range(2):  # warm-up: first replays, allocator growth
            _step(engine)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            _step(engine)
        seconds = time.perf_counter() - start
        _drain(engine, seqs)
        step_ms = seconds / steps * 1e3
        context = workload.prompt_len + 3 + steps // 2  # mean tokens cached over the timed steps
        nbytes = decode_step_bytes(model, batch, context)
        gbs = nbytes / step_ms / 1e6
        rows.append({"batch": batch, "prompt_tokens": workload.prompt_len, "steps": steps, "step_ms": step_ms,
                     "tokens_per_s": batch * steps / seconds, "bytes_per_step": nbytes, "gbs": gbs,
                     "copy_share": gbs / copy_gbs if copy_gbs else None})
    return rows


def bench_speculative(engine: LLMEngine, workload: Workload, device: torch.device) -> dict:
    """Greedy MTP speculation at batch 1 after a workload.prompt_len prompt: tokens/s and acceptance.

    `engine` speculates (config.speculative_tokens = k). Every step drafts k tokens, verifies them
    in one forward and keeps the accepted ones plus one; tokens/s counts what the client gets.
    """
    k = engine.config.speculative_tokens
    (prompt,) = random_prompts(1, workload.prompt_len, seed=300, vocab=engine.runner.vocab_size)
    (seq,) = engine.add_request(prompt, [_greedy((workload.decode_steps + 3) * (k + 1))])
    _until_decoding(engine, [seq])
    for _ in range(2):  # warm-up: first launches, allocator growth
        _step(engine)
    drafted, accepted, emitted = engine.draft_tokens, engine.accepted_tokens, len(seq.output_ids)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(workload.decode_steps):
        _step(engine)
    seconds = time.perf_counter() - start
    drafted, accepted = engine.draft_tokens - drafted, engine.accepted_tokens - accepted
    emitted = len(seq.output_ids) - emitted
    _drain(engine, [seq])
    return {"speculative_tokens": k, "batch": 1, "steps": workload.decode_steps, "tokens": emitted,
            "step_ms": seconds / workload.decode_steps * 1e3, "tokens_per_s": emitted / seconds,
            "acceptance": accepted / drafted if drafted else None}
