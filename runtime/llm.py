"""Offline generation: `LLM(path).generate(prompts, SamplingParams(...))`.

The offline API is the engine: `LLM` is an LLMEngine over a loaded checkpoint, and `generate`
queues every prompt and steps until all are done, the same schedule -> run -> postprocess the
server runs, so offline output is what the server streams.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.model.checkpoint import resolve_checkpoint_dir
from qwen35.runtime.model.loader import load_model, resolve_dtype
from qwen35.runtime.tokenizer.tokenizer import Tokenizer, load_tokenizer

__all__ = ["DEFAULT_STOP_TOKEN_IDS", "LLM", "Output"]


@dataclass
class Output:
    """One prompt's completion."""

    text: str
    token_ids: list[int]  # generated ids, the stop token included when one ended the output
    finish_reason: str  # "stop" (stop token or string) or "length" (max_tokens)
    prompt_token_ids: list[int] = field(default_factory=list)
    stop_reason: int | str | None = None  # the stop token id or stop string that matched


def _checkpoint_tokenizer(path: str | Path, cache_dir: str | Path | None) -> Tokenizer | None:
    """The checkpoint's tokenizer, or None when it ships no tokenizer.json (token-id prompts only)."""
    root = resolve_checkpoint_dir(path, cache_dir)
    return load_tokenizer(root) if (root / "tokenizer.json").is_file() else None


class LLM(LLMEngine):
    """A loaded Qwen3.5 checkpoint (and its tokenizer, when it has one) as an engine for offline generation.

    `config` sets the engine's capacity (default: 8 sequences at once, a context of at most 4096
    tokens, the checkpoint's own limit if lower); extra keyword arguments override its fields.
    """

    def __init__(self, model: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str = torch.float32, config: EngineConfig | None = None,
                 progress: bool = True, cache_dir: str | Path | None = None, **settings):
        loaded = load_model(model, device=device, dtype=resolve_dtype(dtype), progress=progress, cache_dir=cache_dir)
        text = loaded.config.text
        config = config or EngineConfig(max_model_len=min(EngineConfig.max_model_len, text.max_position_embeddings))
        for name, value in settings.items():
            if not hasattr(config, name):
                raise TypeError(f"LLM got an unknown setting {name!r}: pass EngineConfig fields")
            setattr(config, name, value)
        tokenizer = _checkpoint_tokenizer(model, cache_dir)
        eos = set(DEFAULT_STOP_TOKEN_IDS) | set(text.eos_token_ids)
        if tokenizer is not None:
            eos |= set(tokenizer.eos_token_ids)
        runner, self.pools = build_runner(loaded, config)
        super().__init__(runner, config, tokenizer, sorted(eos))
        self.model = loaded

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
            self.check_fits(len(ids), params[i].max_tokens)
        sequences = []
        for ids, p in zip(prompt_ids, params):
            sequences += self._queue(ids, p)
        while self.has_work:
            self._step_checked()
        return [Output(seq.text, seq.output_ids, seq.finish_reason, ids, seq.stop_reason)
                for seq, ids in zip(sequences, prompt_ids)]

    def _step_checked(self) -> None:
        """One engine step; a failed step is an error here (offline there is no one else to serve)."""
        for _, output in self.step():
            if output.finish_reason == "error":
                raise RuntimeError(output.error)

    def _queue(self, prompt_ids: list[int], params: SamplingParams):
        """Queue one prompt, stepping first while the queue is full (a batch larger than the queue)."""
        while len(self.scheduler.waiting) >= self.config.max_queue + self.scheduler.slots.num_free:
            self._step_checked()
        return self.add_request(prompt_ids, [params])

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
