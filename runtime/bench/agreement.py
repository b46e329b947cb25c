"""Greedy generation through the engine's scheduler, and the paged-vs-reference agreement check.

`greedy_generate` is one offline engine loop, top to bottom per step: schedule -> prepare and
run the prompt chunks (packed into one batch when the runner can) and the batched decode ->
argmax -> finish and release. It drives any ModelRunner, so the paged runner and the
reference TorchModelRunner can be held to the same tokens. Random checkpoints written with a
small init (the demo's) collapse to one repeated token under greedy decoding, which would make
any two runners agree: `spread_weights` redraws the matrices at O(1/sqrt(fan_in)) first.
"""
from __future__ import annotations

import math

import torch

from qwen35.runtime.engine.scheduler import Scheduler, SchedulerConfig, Sequence


@torch.no_grad()
def spread_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Redraw every matrix (2D+) of the model as N(0, 1/fan_in) in place; norms and gate vectors keep theirs."""
    generators: dict[torch.device, torch.Generator] = {}
    for param in model.parameters():
        if param.dim() < 2:
            continue
        if param.device not in generators:  # drawn where the weights live: no host round trip on a GPU
            generators[param.device] = torch.Generator(param.device).manual_seed(seed)
        value = torch.randn(param.shape, generator=generators[param.device], device=param.device)
        param.copy_(value / math.sqrt(param.shape[-1]))


@torch.no_grad()
def guessing_mtp_head(model) -> None:
    """Make a random-weight model's MTP head draft right part of the time, in place.

    With random weights the head and the model never agree, so speculation would only ever be
    measured at zero acceptance. Here the head passes the next token's embedding straight
    through (fc keeps the embedding half, its layer adds nothing) and the embeddings are scaled
    up, so a draft is right whenever the model's greedy token is the one its input embedding
    points to: about a third of the time on the demo checkpoint with spread_weights.
    """
    hidden = model.config.text.hidden_size
    weight = model.mtp.fc.weight
    weight.copy_(torch.cat([torch.eye(hidden), torch.zeros(hidden, hidden)], dim=1).to(weight))
    model.mtp.layers[0].self_attn.o_proj.weight.zero_()
    model.mtp.layers[0].mlp.down_proj.weight.zero_()
    model.language_model.embed_tokens.weight.mul_(5.0)


def _prefill(runner, chunks) -> torch.Tensor:
    """Logits [n, V] after each chunk: one packed batch when the runner has prefill_batch."""
    rows = [chunk.seq.row for chunk in chunks]
    pieces = [chunk.seq.prompt_ids[chunk.start:chunk.end] for chunk in chunks]
    if hasattr(runner, "prefill_batch"):
        return runner.prefill_batch(rows, pieces)
    return torch.stack([runner.prefill(row, piece) for row, piece in zip(rows, pieces)])


@torch.inference_mode()
def greedy_generate(runner, prompts: list[list[int]], max_tokens: int | list[int], chunk_size: int = 256,
                    max_prefill_tokens: int | None = None) -> list[list[int]]:
    """Greedy continuations (no stop tokens) of every prompt, max_tokens each, with continuous batching."""
    budgets = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else list(max_tokens)
    config = SchedulerConfig(max_running=runner.num_rows, max_waiting=len(prompts), max_model_len=runner.max_len,
                             prefill_chunk_size=chunk_size, max_prefill_tokens=max_prefill_tokens or 2 * chunk_size)
    scheduler = Scheduler(config)
    sequences = [Sequence(i, list(prompt), budget) for i, (prompt, budget) in enumerate(zip(prompts, budgets))]
    scheduler.add(sequences)
    while scheduler.has_work:
        plan = scheduler.schedule()
        for chunk in plan.prefills:
            if chunk.start == 0:
                runner.reset_row(chunk.seq.row)
        logits = []
        if plan.prefills:
            prefill_logits = _prefill(runner, plan.prefills)
            done = [i for i, chunk in enumerate(plan.prefills) if chunk.completes_prompt]
            logits.append(prefill_logits[done])
        if plan.decodes:
            logits.append(runner.decode([s.row for s in plan.decodes], [s.last_token for s in plan.decodes]))
        if not logits:
            continue
        tokens = torch.cat(logits).argmax(dim=-1).tolist()
        for seq, token in zip(plan.sampled, tokens):
            seq.output_ids.append(token)
            if len(seq.output_ids) >= seq.max_tokens:
                row = seq.row
                scheduler.finish(seq)
                if hasattr(runner, "release_row"):
                    runner.release_row(row)
    return [seq.output_ids for seq in sequences]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or length difference); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_runners(runner, reference, prompts: list[list[int]], max_tokens: int, chunk_size: int) -> dict:
    """Greedy tokens of both runners over the same prompts: matches and first divergence per prompt."""
    ours = greedy_generate(runner, prompts, max_tokens, chunk_size)
    theirs = greedy_generate(reference, prompts, max_tokens, chunk_size)
    rows = []
    for index, (a, b) in enumerate(zip(ours, theirs)):
        diverge = first_divergence(a, b)
        rows.append({"prompt": index, "prompt_tokens": len(prompts[index]), "tokens": len(b),
                     "first_divergence": diverge, "distinct_tokens": len(set(b))})
    return {"all_match": all(r["first_divergence"] is None for r in rows), "max_tokens": max_tokens,
            "chunk_size": chunk_size, "prompts": rows}
