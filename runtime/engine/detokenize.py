"""Streamed text output: token ids -> text deltas, and stop strings over those deltas."""
from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turn token ids, fed one at a time, into text deltas that never split a character.

    Byte-level BPE pieces can end inside a multi-byte UTF-8 character; decoding such a tail
    yields U+FFFD, so those ids are held until a later id completes the character. Invariant:
    the deltas (plus `flush()`) concatenate to `tokenizer.decode(all ids)`.

    Each step decodes only a short window: the ids since the last emitted delta plus the
    previous delta's ids as context (decoders that strip a leading space see the same context
    in both decodes, so the difference is the new text).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.text = ""  # everything emitted so far
        self._context_start = 0  # first id of the last emitted delta
        self._emitted_end = 0  # ids before this index are fully reflected in `text`

    def feed(self, token_id: int) -> str:
        """Add one token id; return the text it completes ("" while a character is partial)."""
        self.token_ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Return whatever is still held at the end of the stream (may contain U+FFFD)."""
        return self._advance(final=True)

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.token_ids[start:end],
                                     skip_special_tokens=self.skip_special_tokens)

    def _advance(self, final: bool) -> str:
        if self._emitted_end == len(self.token_ids):
            return ""
        window = self._decode(self._context_start, len(self.token_ids))
        if window.endswith(REPLACEMENT_CHAR) and not final:
            return ""
        context = self._decode(self._context_start, self._emitted_end)
        delta = window[len(context):]
        self._context_start, self._emitted_end = self._emitted_end, len(self.token_ids)
        self.text += delta
        return delta


class StopMatcher:
    """Cut a stream of text deltas at the first stop string, holding back possible starts.

    OpenAI semantics: the stop string itself is not emitted. The stream stops where a stop
    string first completes (earliest end; on a tie the longer, earlier-starting one), the same
    result however the text is split into deltas. Text that could be the start of a stop
    string is held until it can be ruled in or out; `flush()` releases it at end of stream.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = [s for s in stop_strings if s]
        self.matched: str | None = None  # the stop string that ended the stream
        self._held = ""

    @property
    def stopped(self) -> bool:
        """Whether a stop string has been seen (later deltas are dropped)."""
        return self.matched is not None

    def feed(self, delta: str) -> str:
        """Add a text delta; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        # Invariant: emitted text holds no start of a stop string, so a match can only begin
        # inside held + delta.
        text = self._held + delta
        best: tuple[int, int, str] | None = None
        for stop in self.stop_strings:
            start = text.find(stop)
            if start >= 0 and (best is None or (start + len(stop), start) < best[:2]):
                best = (start + len(stop), start, stop)
        if best is not None:
            self.matched, self._held = best[2], ""
            return text[:best[1]]
        hold = self._longest_partial_match(text)
        self._held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def flush(self) -> str:
        """Release held text at the end of a stream that did not stop on a string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_match(self, text: str) -> int:
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
