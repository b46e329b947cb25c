"""Split streamed Qwen3 output into reasoning and answer at the `<think>...</think>` block.

Qwen3.5's generation prompt opens the block itself when thinking is on (it ends with
`<think>\\n`), so generation starts inside reasoning and the model closes it with
`</think>`. With thinking off the prompt carries an empty block and the output is all
answer, unless the model opens a block of its own at the very start.
"""
from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"
ASSISTANT_TURN = "<|im_start|>assistant"


@dataclass
class ReasoningDelta:
    """What one piece of model text adds to each of the two channels."""

    reasoning: str = ""
    content: str = ""


def prompt_opens_reasoning(prompt_text: str) -> bool:
    """Whether the prompt ends inside an unclosed `<think>` block of the last assistant turn."""
    turn = prompt_text[prompt_text.rfind(ASSISTANT_TURN) + 1:] if ASSISTANT_TURN in prompt_text else prompt_text
    return turn.rfind(THINK_START) > turn.rfind(THINK_END)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningParser:
    """Incremental `<think>` splitter: feed text deltas, get reasoning and content deltas.

    Invariants: emitted reasoning never ends in whitespace that might be the block's last
    (it is held until more reasoning follows), and emitted text never ends in a partial tag.
    Whitespace between `</think>` and the answer is dropped, as is the block's own padding.
    """

    def __init__(self, starts_in_reasoning: bool):
        self.in_reasoning = starts_in_reasoning
        self.saw_reasoning = starts_in_reasoning
        self._held = ""
        self._at_reasoning_start = starts_in_reasoning
        self._at_content_start = not starts_in_reasoning
        self._emitted_content = False

    def feed(self, text: str) -> ReasoningDelta:
        """Add model text; return the reasoning and content it settles."""
        delta = ReasoningDelta()
        buffer = self._held + text
        self._held = ""
        while buffer:
            if self.in_reasoning:
                buffer = self._feed_reasoning(buffer, delta)
            else:
                buffer = self._feed_content(buffer, delta)
        return delta

    def flush(self) -> ReasoningDelta:
        """Release held text at the end of generation."""
        held, self._held = self._held, ""
        if self.in_reasoning:
            return ReasoningDelta(reasoning=held.rstrip())
        if self._at_content_start:
            held = held.lstrip()
        return ReasoningDelta(content=held)

    def _feed_reasoning(self, buffer: str, delta: ReasoningDelta) -> str:
        if self._at_reasoning_start:
            buffer = buffer.lstrip()
            if not buffer:
                return ""
            self._at_reasoning_start = False
        end = buffer.find(THINK_END)
        if end >= 0:
            delta.reasoning += buffer[:end].rstrip()
            self.in_reasoning = False
            self._at_content_start = True
            return buffer[end + len(THINK_END):]
        keep = len(buffer) - _partial_suffix(buffer, THINK_END)
        settled = buffer[:keep].rstrip()
        delta.reasoning += settled
        self._held = buffer[len(settled):]
        return ""

    def _feed_content(self, buffer: str, delta: ReasoningDelta) -> str:
        if self._at_content_start:
            buffer = buffer.lstrip()
            if not buffer:
                return ""
        if not self._emitted_content and not self.saw_reasoning:
            # Only the very first thing the model writes may open a block of its own.
            if buffer.startswith(THINK_START):
                self.in_reasoning = self.saw_reasoning = True
                self._at_reasoning_start = True
                self._at_content_start = False
                return buffer[len(THINK_START):]
            if THINK_START.startswith(buffer):
                self._held = buffer
                return ""
        self._at_content_start = False
        self._emitted_content = True
        delta.content += buffer
        return ""
