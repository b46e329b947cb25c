"""Greedy generation through the engine, and the agreement check between two engines on one model.

`greedy_generate` is the engine's own loop (LLMEngine.step until done) with greedy, ignore-eos
requests, so agreement is checked on exactly what serves: the Triton kernel set against the
torch reference set, CUDA-graph decode against eager, over prompts of awkward lengths with
chunked prefill and fewer slots than prompts. Random checkpoints written with a small init (the
demo's) collapse to one repeated token under greedy decoding, which would make any two engines
agree: `spread_weights` redraws the matrices at O(1/sqrt(fan_in)) first.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams


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


def greedy_generate(model, config: EngineConfig, prompts: list[list[int]], max_tokens: int | list[int]) -> list[list[int]]:
    """Greedy continuations (no stop tokens) of every prompt, max_tokens each, through one engine."""
    budgets = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else list(max_tokens)
    engine = LLMEngine(build_runner(model, config)[0], replace(config, max_queue=max(config.max_queue, len(prompts))))
    sequences = [engine.add_request(prompt, [SamplingParams(temperature=0.0, max_tokens=budget, ignore_eos=True)])[0]
                 for prompt, budget in zip(prompts, budgets)]
    while engine.has_work:
        for _, output in engine.step():
            if output.finish_reason == "error":
                raise RuntimeError(output.error)
    return [seq.output_ids for seq in sequences]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or length difference); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_engines(model, config: EngineConfig, reference: EngineConfig, prompts: list[list[int]],
                    max_tokens: int) -> dict:
    """Greedy tokens of two engine configurations over the same prompts: matches and first divergence per prompt."""
    ours = greedy_generate(model, config, prompts, max_tokens)
    theirs = greedy_generate(model, reference, prompts, max_tokens)
    rows = []
    for index, (a, b) in enumerate(zip(ours, theirs)):
        rows.append({"prompt": index, "prompt_tokens": len(prompts[index]), "tokens": len(b),
                     "first_divergence": first_divergence(a, b), "distinct_tokens": len(set(b))})
    return {"all_match": all(r["first_divergence"] is None for r in rows), "max_tokens": max_tokens,
            "chunk_size": config.prefill_chunk_size, "prompts": rows}
