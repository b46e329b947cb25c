"""OpenAI-compatible HTTP server for the bundled runtime.

Imported lazily so the parsers and settings load without torch:
    create_app(engine, tokenizer, settings) -> FastAPI     (routes, errors, metrics, auth)
    build_app(ServeOptions(model=...)) -> (app, summary)   (checkpoint -> engine -> app)
    run_app(app, socket)                                   (uvicorn on a bound socket)
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "create_app": "qwen35.runtime.server.app",
    "ServeOptions": "qwen35.runtime.server.launch",
    "build_app": "qwen35.runtime.server.launch",
    "run_app": "qwen35.runtime.server.launch",
    "ServerSettings": "qwen35.runtime.server.settings",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qwen35.runtime.server' has no attribute {name!r}")
