"""Load a checkpoint's tokenizer.json with its special tokens, stop ids and chat template."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from qwen35.planner.errors import InputError
from qwen35.runtime.tokenizer.chat_template import ChatTemplate, load_chat_template


class Tokenizer:
    """A `tokenizers.Tokenizer` plus what serving needs: added-token ids by name, eos ids, the chat template."""

    def __init__(self, backend: tokenizers.Tokenizer, *, eos_token_ids: Sequence[int] = (),
                 pad_token_id: int | None = None, chat_template: ChatTemplate | None = None,
                 model_max_length: int | None = None):
        self.backend = backend
        self.eos_token_ids = tuple(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        added = backend.get_added_tokens_decoder()
        self.added_token_ids = {token.content: token_id for token_id, token in added.items()}
        self._special_ids = frozenset(token_id for token_id, token in added.items() if token.special)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer knows, added tokens included (248077 for Qwen3.5)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        """The id of one token string (e.g. '<|im_end|>'); raises KeyError if the vocabulary lacks it."""
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return token_id

    def is_special(self, token_id: int) -> bool:
        """Whether an id is an added token flagged special (dropped by skip_special_tokens)."""
        return token_id in self._special_ids

    def encode(self, text: str) -> list[int]:
        """Token ids for text; added tokens written in the text become their single ids."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Token ids for several texts at once (the Rust side runs them in parallel)."""
        return [encoding.ids for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text for ids; ids beyond the tokenizer (embedding padding rows) are skipped."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            tools: Sequence[Mapping[str, Any]] | None = None, add_generation_prompt: bool = True,
                            enable_thinking: bool | None = None, **kwargs: Any) -> list[int]:
        """Render the conversation with the checkpoint's template and encode it to prompt ids."""
        if self.chat_template is None:
            raise InputError("this checkpoint has no chat template",
                             "send a plain prompt, or add chat_template.jinja to the checkpoint")
        text = self.chat_template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                         enable_thinking=enable_thinking, **kwargs)
        return self.encode(text)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error})",
                         "re-download the checkpoint's config files") from None


def _as_ids(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, int) and not isinstance(item, bool)]
    return []


def _token_content(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _eos_ids(directory: Path, backend: tokenizers.Tokenizer, tokenizer_config: Mapping[str, Any]) -> list[int]:
    # generation_config.json is what generate() stops on; config.json (top level or text_config)
    # and tokenizer_config's eos_token fill in, in that order, without repeats.
    generation = _read_json(directory / "generation_config.json")
    model = _read_json(directory / "config.json")
    found = _as_ids(generation.get("eos_token_id")) + _as_ids(model.get("eos_token_id"))
    found += _as_ids((model.get("text_config") or {}).get("eos_token_id"))
    eos_text = _token_content(tokenizer_config.get("eos_token"))
    if eos_text is not None and backend.token_to_id(eos_text) is not None:
        found.append(backend.token_to_id(eos_text))
    return list(dict.fromkeys(found))


def load_tokenizer(checkpoint_dir: str | Path) -> Tokenizer:
    """Load tokenizer.json, stop ids and the chat template (None if the checkpoint has none) from a directory."""
    directory = Path(checkpoint_dir)
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise InputError(f"no tokenizer.json in {directory}", "point at a Hugging Face checkpoint directory")
    try:
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{tokenizer_path} could not be read: {error}", "re-download tokenizer.json") from None
    tokenizer_config = _read_json(directory / "tokenizer_config.json")
    pad_text = _token_content(tokenizer_config.get("pad_token"))
    pad_id = backend.token_to_id(pad_text) if pad_text else None
    chat_template = load_chat_template(directory)
    max_length = tokenizer_config.get("model_max_length")
    return Tokenizer(
        backend,
        eos_token_ids=_eos_ids(directory, backend, tokenizer_config),
        pad_token_id=pad_id,
        chat_template=chat_template,
        model_max_length=max_length if isinstance(max_length, int) else None,
    )
