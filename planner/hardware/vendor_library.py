"""A vendor management library (pynvml, amdsmi) whose calls degrade to defaults instead of raising."""
from __future__ import annotations

from typing import Any


class VendorLibrary:
    """The injected library module and the exception type its calls raise."""

    def __init__(self, module: Any, error_name: str):
        self.module = module
        self.error = getattr(module, error_name, Exception)

    def call(self, function: str, *args: Any, default: Any = None) -> Any:
        """Call a library function; a library error or a missing function gives `default`."""
        fn = getattr(self.module, function, None)
        if fn is None:
            return default
        try:
            return fn(*args)
        except self.error:
            return default
