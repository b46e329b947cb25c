"""A ModelRunner that makes the engine write a scripted answer, chosen by the prompt.

Its logits put all the mass on the script's next token, so the real sampler, detokenizer,
stop handling, parsers and HTTP streaming all run; only the network's numbers are replaced.
The random demo weights cannot write a tool call or a reasoning block, so tests use this.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch

IM_END = 248046


class ScriptedRunner:
    """`ModelRunner` over scripted text; `gate.clear()` holds decode steps until `gate.set()`."""

    def __init__(self, tokenizer, choose: Callable[[str], str], num_rows: int = 4, max_len: int = 512,
                 vocab_size: int = 248320):
        self.tokenizer = tokenizer
        self.choose = choose
        self.num_rows, self.max_len, self.vocab_size = num_rows, max_len, vocab_size
        self.device = torch.device("cpu")
        self.gate = threading.Event()
        self.gate.set()
        self._prompts: list[list[int]] = [[] for _ in range(num_rows)]
        self._scripts: list[list[int]] = [[] for _ in range(num_rows)]
        self._positions = [0] * num_rows

    def script_ids(self, prompt_text: str) -> list[int]:
        """The token ids the runner answers a prompt with (the chat end token last)."""
        return self.tokenizer.encode(self.choose(prompt_text)) + [IM_END]

    def _forced(self, rows: list[int]) -> torch.Tensor:
        logits = torch.full((len(rows), self.vocab_size), -1e4)
        for i, row in enumerate(rows):
            script, position = self._scripts[row], self._positions[row]
            logits[i, script[position] if position < len(script) else IM_END] = 0.0
            self._positions[row] = position + 1
        return logits

    def reset_row(self, row: int) -> None:
        """Forget the row's prompt and script."""
        self._prompts[row], self._scripts[row], self._positions[row] = [], [], 0

    def prefill(self, row: int, token_ids: list[int]) -> torch.Tensor:
        """Record prompt tokens; the script is chosen from the whole prompt so far."""
        self._prompts[row] += token_ids
        self._scripts[row] = self.script_ids(self.tokenizer.decode(self._prompts[row]))
        self._positions[row] = 0
        return self._forced([row])[0]

    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """The next script token of each row (waits while the gate is closed)."""
        if not self.gate.wait(timeout=60):
            raise RuntimeError("scripted runner gate left closed")
        return self._forced(rows)
