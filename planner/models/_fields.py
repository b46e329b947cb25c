"""Typed reads from a raw JSON dict, raising InputError that names the file and the key."""
from __future__ import annotations

from typing import Any

from qwen35.planner.errors import InputError

REQUIRED = object()

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class FieldReader:
    """Reads keys of one JSON object; errors name the file and the dotted key path."""

    def __init__(self, raw: Any, source: str, path: str = ""):
        if not isinstance(raw, dict):
            what = f"'{path}'" if path else "the top level"
            raise InputError(
                f"{source}: {what} must be a JSON object, got {type(raw).__name__}",
                "check that the file is a Hugging Face config.json",
            )
        self.raw = raw
        self.source = source
        self.path = path

    def key_path(self, key: str) -> str:
        """The dotted path of `key` as errors show it."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """True when the key is present and not null."""
        return self.raw.get(key) is not None

    def _missing(self, key: str) -> InputError:
        return InputError(
            f"{self.source}: missing required key '{self.key_path(key)}'",
            "check that the checkpoint's config.json is complete (compare with the hub's)",
        )

    def _wrong(self, key: str, value: Any, wanted: str) -> InputError:
        return InputError(
            f"{self.source}: '{self.key_path(key)}' must be {wanted}, got {value!r}",
            "fix the value in config.json",
        )

    def get(self, key: str, kind: type, default: Any = REQUIRED) -> Any:
        """Value of `key` checked against `kind` (int, float, bool or str); default when absent."""
        value = self.raw.get(key)
        if value is None:
            if default is REQUIRED:
                raise self._missing(key)
            return default
        # bool is an int in Python; a JSON `true` is never a valid count.
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._wrong(key, value, "an integer")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self._wrong(key, value, "a number")
        if kind in (bool, str) and not isinstance(value, kind):
            raise self._wrong(key, value, _TYPE_WORDS[kind])
        return float(value) if kind is float else value

    def positive(self, key: str, default: Any = REQUIRED) -> int:
        """A positive integer."""
        value = self.get(key, int, default)
        if value is not None and value <= 0:
            raise self._wrong(key, value, "a positive integer")
        return value

    def int_list(self, key: str, default: Any = REQUIRED) -> tuple[int, ...] | None:
        """A list of integers as a tuple."""
        value = self.raw.get(key)
        if value is None:
            if default is REQUIRED:
                raise self._missing(key)
            return default
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise self._wrong(key, value, "a list of integers")
        return tuple(value)

    def str_list(self, key: str, default: Any = REQUIRED) -> tuple[str, ...] | None:
        """A list of strings as a tuple."""
        value = self.raw.get(key)
        if value is None:
            if default is REQUIRED:
                raise self._missing(key)
            return default
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self._wrong(key, value, "a list of strings")
        return tuple(value)

    def sub(self, key: str) -> "FieldReader | None":
        """A nested object as its own reader, or None when absent."""
        value = self.raw.get(key)
        if value is None:
            return None
        return FieldReader(value, self.source, self.key_path(key))
