"""Grammar masks for a batch: llguidance fills one bit per token on the host, one op applies them on the device.

Each row's mask is 32-bit words [V / 32] (bit t of word w allows token 32w + t), written by
each constrained row's matcher into a host buffer (pinned on CUDA), copied to the device in
one transfer and expanded there through a byte -> 8 flags table into the refused tokens, whose
logits become -inf. Rows without a constraint keep every bit set, so the whole batch is masked
by the same op and no row is gathered or scattered. A speculative step masks every verified
position: each matcher walks its row's drafts and rolls them back; positions after a draft the
grammar refuses stay all-allowed (verification rejects that draft, so they are never sampled).
The drafter's own logits are masked the same way, draft by draft, so it proposes only what the
grammar allows.

The masks are filled on the calling thread (llguidance releases the GIL), not by llguidance's
thread pool: its workers, spinning between steps, stalled torch's own CPU threads for a
scheduler tick (~16 ms) per op on a CPU engine; on a GPU the fill runs while the forward is
still on the device.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from qwen35.runtime.engine.grammar.matcher import GrammarMatcher

_ALLOW_ALL = -1  # every bit set


class TokenBitmask:
    """The host mask buffer (grown on demand) and the device-side apply."""

    def __init__(self, vocab_size: int, device: torch.device):
        self.vocab_size = vocab_size
        self.words = -(-vocab_size // 32)
        self.device = device
        self.host = torch.empty(0, self.words, dtype=torch.int32)
        # refused[byte] = the 8 tokens a mask byte refuses (bit i of the byte is token 8 * byte_index + i).
        bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
        self.refused = torch.from_numpy(bits == 0).to(device)

    def apply(self, logits: torch.Tensor, matchers: Sequence[GrammarMatcher | None],
              drafts: Sequence[Sequence[int]] | None = None) -> None:
        """Mask logits [B, V] in place, row b by matchers[b]'s next-token mask (None or in reasoning: no mask);
        with drafts (a drafter's step), the mask after drafts[b]."""
        host = self._buffer(len(matchers))
        for row, matcher in enumerate(matchers):
            if matcher is not None:
                matcher.fill_masks(host[row].data_ptr(), self.words * 4, drafts[row] if drafts else (),
                                   last_only=True)
        self._apply(logits, host)

    def apply_with_drafts(self, logits: torch.Tensor, matchers: Sequence[GrammarMatcher | None],
                          drafts: Sequence[Sequence[int]]) -> None:
        """Mask verify logits [B, k + 1, V] in place: position j of row b by matchers[b] after drafts[b][:j]."""
        width = logits.shape[1]
        host = self._buffer(len(matchers) * width)
        for row, (matcher, row_drafts) in enumerate(zip(matchers, drafts)):
            if matcher is not None:
                matcher.fill_masks(host[row * width].data_ptr(), self.words * 4, row_drafts)
        self._apply(logits.view(-1, logits.shape[-1]), host)

    def _buffer(self, rows: int) -> torch.Tensor:
        """The first `rows` host rows, all bits set; the buffer doubles when it is too small (rarely)."""
        if self.host.shape[0] < rows:
            size = max(rows, 2 * self.host.shape[0])
            self.host = torch.empty(size, self.words, dtype=torch.int32, pin_memory=self.device.type == "cuda")
        return self.host[:rows].fill_(_ALLOW_ALL)

    def _apply(self, logits: torch.Tensor, host: torch.Tensor) -> None:
        """Set the refused logits of logits [N, V] to -inf from host masks [N, words]."""
        # The copy is non-blocking from pinned memory: the host buffer is rewritten only at the next
        # step's mask, after this step's tokens were read back (sampling syncs), so it has long landed.
        masks = host.to(self.device, non_blocking=True)
        refused = self.refused.index_select(0, masks.view(torch.uint8).view(-1).int())
        logits.masked_fill_(refused.view(len(host), -1)[:, :logits.shape[-1]], float("-inf"))
