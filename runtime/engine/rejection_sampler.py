"""Draft sampling and speculative rejection sampling under each request's SamplingParams.

Both the draft distribution q (from the MTP head's logits) and the target p (from the verify
forward) go through the sampler's own processing: penalties -> temperature -> top-k -> top-p
-> min_p (sampling.apply_penalties and filter_probs), then renormalising. Penalties at draft
position j count the drafts before it as generated, exactly what the plain sampler would see
had those drafts been emitted.

Greedy rows (temperature ~0) draft the argmax and accept while draft == target argmax, so
their output is plain greedy decoding's. Sampled rows use the standard rule (Leviathan et
al., Chen et al.): accept draft x with probability min(1, p(x) / q(x)); at the first
rejection emit a token from normalize(max(0, p - q)); after k acceptances emit a bonus token
from p. Each emitted token is then distributed exactly as the plain sampler's.

Randomness: unseeded rows draw from the engine's generator. Seeded rows derive every draw
from (seed, step) with the sampler's counter-based noise, with distinct salts for the draft
draw and the acceptance test, so a seeded request repeats itself for a given k; the residual
and bonus draws use the plain sampler's own noise for that step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen35.runtime.engine.sampling import SamplingBatch, apply_penalties, filter_probs, seeded_noise

DRAFT_SALT = 0x2545F491
ACCEPT_SALT = 0x1F123BB5


def distribution(logits: torch.Tensor, batch: SamplingBatch, counts: torch.Tensor | None,
                 prompt_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per row of logits [B, V]: the penalised argmax [B] and processed probabilities [B, V] (None: all greedy)."""
    logits = logits.to(torch.float32)
    if batch.needs_penalties:
        logits = apply_penalties(logits, batch, counts, prompt_mask)
    top = logits.argmax(dim=-1)
    if batch.all_greedy:
        return top, None
    probs = torch.softmax(logits / batch.temperature[:, None], dim=-1)
    if batch.needs_filter:
        probs = filter_probs(probs, batch)
    return top, probs / probs.sum(dim=-1, keepdim=True)


def exponential_noise(batch: SamplingBatch, steps: torch.Tensor, width: int,
                      generator: torch.Generator | None, salt: int = 0) -> torch.Tensor:
    """Exp(1) noise [B, width]: seeded rows from (seed ^ salt, steps[row]), the others from generator."""
    noise = torch.empty(steps.shape[0], width, dtype=torch.float32, device=steps.device)
    if batch.seeded_rows.numel() < steps.shape[0]:
        noise.exponential_(generator=generator)
    if batch.seeded_rows.numel():
        seeded_steps = steps.index_select(0, batch.seeded_rows)
        noise.index_copy_(0, batch.seeded_rows, seeded_noise(batch.seed_lo ^ salt, batch.seed_hi, seeded_steps, width))
    return noise


def draw(batch: SamplingBatch, top: torch.Tensor, probs: torch.Tensor | None, steps: torch.Tensor,
         generator: torch.Generator | None, salt: int = 0) -> torch.Tensor:
    """One token per row: the argmax on greedy rows, a draw from probs (which may be unnormalised) on the others."""
    if probs is None:
        return top
    noise = exponential_noise(batch, steps, probs.shape[-1], generator, salt)
    sampled = (probs / noise.clamp_min_(1e-20)).argmax(dim=-1)
    return torch.where(batch.greedy, top, sampled)


def add_counts(counts: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """counts [B, V] with one more occurrence of tokens [B] (None stays None)."""
    if counts is None:
        return None
    return counts.scatter_add(1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=counts.dtype))


@dataclass
class Verdict:
    """What verification decided per row: drafts accepted, and the tokens to emit."""

    num_accepted: torch.Tensor  # [B] int64, 0..k
    tokens: torch.Tensor  # [B, k+1]: row b emits tokens[b, :num_accepted[b] + 1]


def verify_drafts(target_logits: torch.Tensor, drafts: torch.Tensor, draft_probs: torch.Tensor | None,
                  batch: SamplingBatch, counts: torch.Tensor | None, prompt_mask: torch.Tensor | None,
                  generator: torch.Generator | None) -> Verdict:
    """Accept a prefix of drafts [B, k] against target_logits [B, k+1, V]; draft_probs [B, k, V] is q."""
    num_drafts = drafts.shape[1]
    steps = batch.steps
    tops, target_probs = [], []
    for j in range(num_drafts + 1):
        top, probs = distribution(target_logits[:, j], batch, counts, prompt_mask)
        tops.append(top)
        target_probs.append(probs)
        if j < num_drafts:
            counts = add_counts(counts, drafts[:, j])
    top = torch.stack(tops, dim=1)  # [B, k+1]
    accept = drafts == top[:, :num_drafts]
    if target_probs[0] is not None:
        p = torch.stack(target_probs, dim=1)  # [B, k+1, V]
        p_draft = p[:, :num_drafts].gather(2, drafts[..., None]).squeeze(2)
        q_draft = draft_probs.gather(2, drafts[..., None]).squeeze(2)
        uniform = torch.cat([torch.exp(-exponential_noise(batch, steps + j, 1, generator, ACCEPT_SALT))
                             for j in range(num_drafts)], dim=1)
        accept = torch.where(batch.greedy[:, None], accept, uniform * q_draft < p_draft)
    num_accepted = accept.long().cumprod(dim=1).sum(dim=1)
    final = top.gather(1, num_accepted[:, None]).squeeze(1)
    if target_probs[0] is not None:
        rows = torch.arange(drafts.shape[0], device=drafts.device)
        p_final = p[rows, num_accepted]
        # After a rejection at j: max(0, p_j - q_j); after k acceptances (no q): p_k itself.
        q_final = draft_probs[rows, num_accepted.clamp(max=num_drafts - 1)]
        q_final = q_final * (num_accepted < num_drafts)[:, None]
        residual = (p_final - q_final).clamp_min_(0.0)
        residual = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, p_final)
        final = draw(batch, final, residual, steps + num_accepted, generator)
    tokens = torch.cat([drafts, drafts[:, :1]], dim=1).scatter(1, num_accepted[:, None], final[:, None])
    return Verdict(num_accepted, tokens)
