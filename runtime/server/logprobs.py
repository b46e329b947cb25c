"""Token strings and bytes for logprobs, in the chat and the legacy completions layouts."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from qwen35.runtime.engine.outputs import TokenLogprob


def _byte_level_table() -> dict[str, int]:
    # Byte-level BPE spells each byte as one printable character: printable Latin-1 bytes as
    # themselves, the rest as code points from 256 up, in byte order (GPT-2's scheme).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


_BYTE_LEVEL = _byte_level_table()


class TokenTexts:
    """Maps token ids to display text and exact UTF-8 bytes (cached per id)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._added_ids = set(tokenizer.backend.get_added_tokens_decoder())
        self.text = lru_cache(maxsize=65536)(self._text)

    def bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (an added token's own text; unknown ids: empty)."""
        backend = self.tokenizer.backend
        piece = backend.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self._added_ids:
            return piece.encode("utf-8")
        if all(ch in _BYTE_LEVEL for ch in piece):
            return bytes(_BYTE_LEVEL[ch] for ch in piece)
        return piece.encode("utf-8")

    def _text(self, token_id: int) -> str:
        raw = self.bytes(token_id)
        if not raw and self.tokenizer.backend.id_to_token(token_id) is None:
            return f"token_id:{token_id}"
        return raw.decode("utf-8", errors="replace")


def chat_logprobs(entries: list[TokenLogprob], texts: TokenTexts) -> list[dict[str, Any]]:
    """Chat `logprobs.content` entries: token, logprob, bytes and top_logprobs."""
    out = []
    for entry in entries:
        top = [{"token": texts.text(tid), "logprob": _finite(lp), "bytes": list(texts.bytes(tid))}
               for tid, lp in entry.top]
        out.append({"token": texts.text(entry.token_id), "logprob": _finite(entry.logprob),
                    "bytes": list(texts.bytes(entry.token_id)), "top_logprobs": top})
    return out


def completion_logprobs(entries: list[TokenLogprob], texts: TokenTexts, text_offset: int) -> dict[str, Any]:
    """Legacy completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens, values, tops, offsets = [], [], [], []
    for entry in entries:
        token = texts.text(entry.token_id)
        tokens.append(token)
        values.append(_finite(entry.logprob))
        tops.append({texts.text(tid): _finite(lp) for tid, lp in entry.top} if entry.top else None)
        offsets.append(text_offset)
        text_offset += len(token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def _finite(value: float) -> float:
    # JSON has no -inf; OpenAI reports impossible tokens with a very negative number instead.
    return max(float(value), -9999.0)
