"""Offline generation: `LLM(path).generate(prompts, SamplingParams(...))`.

One call runs its prompts as a batch: each prompt gets a cache row and is prefilled on its
own in chunks (so prompts of any lengths mix), then all unfinished rows decode together,
each at its own position. Sampling, detokenisation and stop strings use the engine's shared
pieces, so offline output matches what the server streams.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwen35.runtime.engine.detokenize import IncrementalDetokenizer, StopMatcher
from qwen35.runtime.engine.sampling import SamplingBatch, SamplingParams, TokenHistory, sample
from qwen35.runtime.model.checkpoint import resolve_checkpoint_dir
from qwen35.runtime.model.loader import load_model, resolve_dtype
from qwen35.runtime.model.qwen35_model import Qwen35Model
from qwen35.runtime.tokenizer.tokenizer import Tokenizer, load_tokenizer

# <|endoftext|> and <|im_end|>: every Qwen3.5 checkpoint stops on both.
DEFAULT_STOP_TOKEN_IDS = (248044, 248046)


@dataclass
class Output:
    """One prompt's completion."""

    text: str
    token_ids: list[int]  # generated ids, the stop token included when one ended the output
    finish_reason: str  # "stop" (stop token or string) or "length" (max_tokens)
    prompt_token_ids: list[int] = field(default_factory=list)
    stop_reason: int | str | None = None  # the stop token id or stop string that matched


@dataclass
class _Sequence:
    """A row's generation progress."""

    params: SamplingParams
    stop_ids: frozenset[int]
    detokenizer: IncrementalDetokenizer | None
    matcher: StopMatcher
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def add(self, token_id: int) -> None:
        """Take one sampled token and decide whether the sequence is finished."""
        self.token_ids.append(token_id)
        if token_id in self.stop_ids:
            self._finish("stop", token_id)
            return
        if self.detokenizer is not None:
            self.text += self.matcher.feed(self.detokenizer.feed(token_id))
            if self.matcher.stopped:
                self.finish_reason, self.stop_reason = "stop", self.matcher.matched
                return
        if len(self.token_ids) >= self.params.max_tokens:
            self._finish("length", None)

    def _finish(self, reason: str, stop_reason: int | None) -> None:
        self.finish_reason, self.stop_reason = reason, stop_reason
        if self.detokenizer is not None:
            self.text += self.matcher.feed(self.detokenizer.flush())
            self.text += self.matcher.flush()
            if self.matcher.stopped:
                self.finish_reason, self.stop_reason = "stop", self.matcher.matched


def _checkpoint_tokenizer(path: str | Path, cache_dir: str | Path | None) -> Tokenizer | None:
    """The checkpoint's tokenizer, or None when it ships no tokenizer.json (token-id prompts only)."""
    root = resolve_checkpoint_dir(path, cache_dir)
    return load_tokenizer(root) if (root / "tokenizer.json").is_file() else None


class LLM:
    """A loaded Qwen3.5 checkpoint (and its tokenizer, when it has one) for offline generation."""

    def __init__(self, model: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str = torch.float32, prefill_chunk_size: int = 512,
                 seed: int = 0, progress: bool = True, cache_dir: str | Path | None = None):
        if prefill_chunk_size < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {prefill_chunk_size}")
        self.model: Qwen35Model = load_model(model, device=device, dtype=resolve_dtype(dtype),
                                             progress=progress, cache_dir=cache_dir)
        self.device = self.model.output_weight.device
        self.prefill_chunk_size = prefill_chunk_size
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.tokenizer = _checkpoint_tokenizer(model, cache_dir)
        eos = set(DEFAULT_STOP_TOKEN_IDS) | set(self.model.config.text.eos_token_ids)
        if self.tokenizer is not None:
            eos |= set(self.tokenizer.eos_token_ids)
        self.eos_token_ids = frozenset(eos)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a text prompt (no special tokens added)."""
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer.json: pass prompts as lists of token ids")
        return self.tokenizer.encode(prompt)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[Output]:
        """Complete each prompt (text or token ids); one SamplingParams for all, or one per prompt."""
        if not prompts:
            return []
        params = self._params_per_prompt(sampling_params, len(prompts))
        prompt_ids = [self.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"prompt {i} is empty")
        with torch.inference_mode():
            sequences = self._run(prompt_ids, params)
        return [Output(s.text, s.token_ids, s.finish_reason, ids, s.stop_reason)
                for s, ids in zip(sequences, prompt_ids)]

    @staticmethod
    def _params_per_prompt(sampling_params, count: int) -> list[SamplingParams]:
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = [sampling_params] * count if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(params) != count:
            raise ValueError(f"got {len(params)} SamplingParams for {count} prompts")
        for p in params:
            p.validate()
            if p.n != 1:
                raise ValueError("LLM.generate returns one completion per prompt: use n=1")
        return params

    def _new_sequence(self, params: SamplingParams) -> _Sequence:
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        detokenizer = IncrementalDetokenizer(self.tokenizer.backend) if self.tokenizer is not None else None
        return _Sequence(params, frozenset(stop_ids), detokenizer, StopMatcher(params.stop))

    def _prefill(self, cache, row: int, ids: list[int]) -> torch.Tensor:
        """Run one prompt into its cache row in chunks; the last position's logits [V]."""
        tokens = torch.tensor(ids, dtype=torch.long, device=self.device)[None]
        for start in range(0, len(ids), self.prefill_chunk_size):
            logits = self.model(tokens[:, start:start + self.prefill_chunk_size], cache, rows=[row], last_only=True)
        return logits[0, -1]

    def _run(self, prompt_ids: list[list[int]], params: list[SamplingParams]) -> list[_Sequence]:
        rows = len(prompt_ids)
        max_len = max(len(ids) + p.max_tokens for ids, p in zip(prompt_ids, params))
        cache = self.model.new_cache(rows, max_len)
        sequences = [self._new_sequence(p) for p in params]
        history = None
        if any(p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1 for p in params):
            history = TokenHistory(rows, self.model.config.text.vocab_size, device=self.device)
            for row, ids in enumerate(prompt_ids):
                history.start(row, ids)
        logits = torch.stack([self._prefill(cache, row, ids) for row, ids in enumerate(prompt_ids)])

        active = list(range(rows))
        batch = None
        while True:
            slots = torch.tensor(active, dtype=torch.long, device=self.device)
            if batch is None:
                batch = SamplingBatch.from_params([params[r] for r in active],
                                                  [len(sequences[r].token_ids) for r in active], self.device)
            chosen = sample(logits, batch, history, slots, self.generator).token_ids
            if history is not None:
                history.append(slots, chosen)
            for row, token_id in zip(active, chosen.tolist()):
                sequences[row].add(token_id)
            still = [r for r in active if sequences[r].finish_reason is None]
            if not still:
                return sequences
            if still != active:
                batch, active = None, still  # composition changed: rebuild the sampling tensors
            else:
                batch.advance()
            last = torch.tensor([[sequences[r].token_ids[-1]] for r in active], device=self.device)
            logits = self.model(last, cache, rows=active)[:, -1]
