"""A runner that makes the engine write a scripted answer, chosen by the prompt.

Its logits put all the mass on the script's next token, so the real scheduler, sampler,
detokenizer, stop handling, parsers and HTTP streaming all run; only the network's numbers are
replaced. The random demo weights cannot write a tool call or a reasoning block, so tests use this.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.engine.stand_in import LogitsRunner

IM_END = 248046


class ScriptedRunner(LogitsRunner):
    """Scripted text per prompt; `gate.clear()` holds decode steps until `gate.set()`."""

    def __init__(self, tokenizer, choose: Callable[[str], str], num_rows: int = 4, max_len: int = 512,
                 vocab_size: int = 248320):
        super().__init__(num_rows, max_len, vocab_size)
        self.tokenizer = tokenizer
        self.choose = choose
        self.gate = threading.Event()
        self.gate.set()
        self._scripts: dict[int, list[int]] = {}  # seq_id -> the script chosen from its whole prompt

    def script_ids(self, prompt_text: str) -> list[int]:
        """The token ids the runner answers a prompt with (the chat end token last)."""
        return self.tokenizer.encode(self.choose(prompt_text)) + [IM_END]

    def logits(self, seqs: list[Sequence]) -> torch.Tensor:
        """The next script token of each sequence; decode steps wait while the gate is closed."""
        if any(seq.output_ids for seq in seqs) and not self.gate.wait(timeout=60):
            raise RuntimeError("scripted runner gate left closed")
        logits = torch.full((len(seqs), self.vocab_size), -1e4)
        for i, seq in enumerate(seqs):
            if not seq.output_ids:
                self._scripts[seq.seq_id] = self.script_ids(self.tokenizer.decode(seq.prompt_ids))
            script, position = self._scripts[seq.seq_id], len(seq.output_ids)
            logits[i, script[position] if position < len(script) else IM_END] = 0.0
            if position + 1 >= len(script):
                self._scripts.pop(seq.seq_id, None)  # its last token: the script is no longer needed
        return logits
