"""One engine step on the model: prompt chunks, batched decode or MTP speculation, sampling.

`StepExecutor` belongs to the engine thread: it owns the sampler's state (token history, the
unseeded generator, the sampling tensors kept across steady steps) and calls the runner.
Sequences' bookkeeping stays with the engine, which hands in the live `Generation`s.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from qwen35.runtime.engine.outputs import Generation, GenerationOutput, TokenLogprob
from qwen35.runtime.engine.runner import ModelRunner
from qwen35.runtime.engine.sampling import SamplingBatch, TokenHistory, sample
from qwen35.runtime.engine.scheduler import Sequence, StepPlan


class StepExecutor:
    """Runs StepPlans on a runner and turns the sampled tokens into outputs."""

    def __init__(self, runner: ModelRunner, seed: int, speculative_tokens: int,
                 take_released_rows: Callable[[], list[int]], observer=None):
        self.runner = runner
        self.speculative_tokens = speculative_tokens
        self.observer = observer
        self.history = TokenHistory(runner.num_rows, runner.vocab_size, device=runner.device)
        self.generator = torch.Generator(runner.device).manual_seed(seed)
        self.draft_tokens = 0  # speculation: drafts proposed and accepted so far
        self.accepted_tokens = 0
        self._take_released_rows = take_released_rows  # rows whose sequence ended, taken once
        self._sampling_cache: list | None = None  # [seq ids, their output counts, SamplingBatch, slots]
        self._generations: dict[int, Generation] = {}

    def execute(self, plan: StepPlan, generations: dict[int, Generation]) -> list[tuple[int, GenerationOutput]]:
        """One step: prefill chunks, batched decode (or speculation), sample, detokenize."""
        self._generations = generations
        if self.speculative_tokens and plan.decodes:
            return self.execute(StepPlan(prefills=plan.prefills), generations) + self._speculate(plan.decodes)
        with torch.inference_mode():
            self.release_rows()
            logits = self._prefill(plan.prefills)
            if plan.decodes:
                logits.append(self.runner.decode([s.row for s in plan.decodes],
                                                 [s.last_token for s in plan.decodes]))
            sampled = plan.sampled
            if not sampled:
                return []
            generations = [self._generations[s.seq_id] for s in sampled]
            batch, slots = self._sampling_inputs(sampled, generations)
            result = sample(torch.cat(logits), batch, self.history, slots, self.generator)
            self.history.append(slots, result.token_ids)
            token_ids = result.token_ids.tolist()
            logprobs = self._logprobs(result, generations)
            return [(g.seq.seq_id, g.add(token_id, lp)) for g, token_id, lp in zip(generations, token_ids, logprobs)]

    def _sampling_inputs(self, sampled: list[Sequence],
                         generations: list[Generation]) -> tuple[SamplingBatch, torch.Tensor]:
        """The step's SamplingBatch and cache-row slots, rebuilt only when the batch changes.

        In steady decoding the same sequences are sampled step after step, each one token
        further: then the device tensors stay and only the step counters move (on the device).
        """
        key = tuple(s.seq_id for s in sampled)
        steps = [len(s.output_ids) for s in sampled]
        cached = self._sampling_cache
        if cached is not None and cached[0] == key and all(a == b + 1 for a, b in zip(steps, cached[1])):
            cached[2].advance()
        else:
            device = self.runner.device
            batch = SamplingBatch.from_params([g.params for g in generations], steps, device)
            slots = torch.tensor([s.row for s in sampled], dtype=torch.long, device=device)
            cached = self._sampling_cache = [key, None, batch, slots]
        cached[1] = steps
        return cached[2], cached[3]

    def release_rows(self) -> None:
        """Hand the pages and state slots of ended sequences back to a paged runner."""
        rows = self._take_released_rows()
        release = getattr(self.runner, "release_row", None)
        if release is not None:
            for row in rows:
                release(row)

    def _prefill(self, chunks: list) -> list[torch.Tensor]:
        """Run the step's prompt chunks; logits [1, V] for each chunk that completes its prompt.

        A runner with prefill_batch takes every chunk in one packed forward; otherwise one
        forward per chunk. Media chunks pass their slice of the prompt's embeddings and positions.
        """
        rows, token_lists, media = [], [], []
        for chunk in chunks:
            seq = chunk.seq
            if chunk.start == 0:
                self.runner.reset_row(seq.row)
                self.history.start(seq.row, seq.prompt_ids)
            generation = self._generations[seq.seq_id]
            inputs = None
            if generation.media is not None:
                inputs = generation.media.prepare(self.runner, seq.prompt_ids).chunk(chunk.start, chunk.end)
                if chunk.completes_prompt:
                    generation.media = None
            rows.append(seq.row)
            token_lists.append(seq.prompt_ids[chunk.start:chunk.end])
            media.append(inputs)
        if not chunks:
            return []
        has_media = any(m is not None for m in media)
        if hasattr(self.runner, "prefill_batch"):
            extra = {"media": media} if has_media else {}
            stacked = self.runner.prefill_batch(rows, token_lists, **extra)
            return [stacked[i:i + 1] for i, chunk in enumerate(chunks) if chunk.completes_prompt]
        logits = []
        for chunk, row, tokens, inputs in zip(chunks, rows, token_lists, media):
            extra = {"media": inputs} if inputs is not None else {}
            row_logits = self.runner.prefill(row, tokens, **extra)
            if chunk.completes_prompt:
                logits.append(row_logits[None])
        return logits

    def _speculate(self, decodes: list[Sequence]) -> list[tuple[int, GenerationOutput]]:
        """Draft, verify and accept for the decoding sequences; one output per emitted token."""
        with torch.inference_mode():
            generations = [self._generations[s.seq_id] for s in decodes]
            device = self.runner.device
            batch = SamplingBatch.from_params([g.params for g in generations], [len(s.output_ids) for s in decodes],
                                              device)
            slots = torch.tensor([s.row for s in decodes], dtype=torch.long, device=device)
            step = self.runner.speculate([s.row for s in decodes], [s.last_token for s in decodes], batch,
                                         self.history, slots, self.generator)
            chosen = step.logprobs.tolist() if step.logprobs is not None else None
            top_ids = step.top_ids.tolist() if step.top_ids is not None else None
            top_values = step.top_logprobs.tolist() if step.top_logprobs is not None else None
            results, taken_slots, taken_tokens = [], [], []
            for i, (g, tokens) in enumerate(zip(generations, step.token_ids)):
                wanted = g.params.logprobs
                for j, token_id in enumerate(tokens):
                    logprob = None
                    if wanted is not None:
                        logprob = TokenLogprob(token_id, chosen[i][j],
                                               list(zip(top_ids[i][j][:wanted], top_values[i][j][:wanted])))
                    output = g.add(token_id, logprob)
                    results.append((g.seq.seq_id, output))
                    taken_slots.append(g.seq.row)
                    taken_tokens.append(token_id)
                    if output.finish_reason is not None:
                        break
            self.history.append(torch.tensor(taken_slots, dtype=torch.long, device=device),
                                torch.tensor(taken_tokens, dtype=torch.long, device=device))
            accepted = sum(step.num_accepted)
            self.draft_tokens += step.num_drafted
            self.accepted_tokens += accepted
            on_speculation = getattr(self.observer, "on_speculation", None)
            if on_speculation is not None:
                on_speculation(step.num_drafted, accepted)
            return results

    @staticmethod
    def _logprobs(result, generations: list[Generation]) -> list[TokenLogprob | None]:
        if result.logprobs is None:
            return [None] * len(generations)
        chosen = result.logprobs.tolist()
        top_ids, top_values = result.top_ids.tolist(), result.top_logprobs.tolist()
        out: list[TokenLogprob | None] = []
        for i, (g, token_id) in enumerate(zip(generations, result.token_ids.tolist())):
            wanted = g.params.logprobs
            if wanted is None:
                out.append(None)
            else:
                out.append(TokenLogprob(token_id, chosen[i], list(zip(top_ids[i][:wanted], top_values[i][:wanted]))))
        return out
