"""Command line of qwen35's own bundled runtime (`qwen35 serve`)."""
from __future__ import annotations

from importlib import metadata

from qwen35.planner.engines.settings import ServeSettings
from qwen35.planner.plan import EngineCommand


def resolve_version(requested: str | None) -> str:
    """The bundled runtime is versioned with qwen35 itself."""
    try:
        return metadata.version("qwen35")
    except metadata.PackageNotFoundError:
        return requested or "0.1.0"


def render(settings: ServeSettings, version: str) -> tuple[list[EngineCommand], list[str]]:
    """One `qwen35 serve` command on one device."""
    device = "cpu" if settings.vendor == "cpu" else "cuda"
    argv = [
        "qwen35", "serve", "--model", settings.model_path,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(settings.port),
        "--device", device,
        "--dtype", "float32" if device == "cpu" else "bfloat16",
        "--max-model-len", str(settings.context_length),
        "--max-running-requests", str(settings.max_running_requests),
    ]
    if settings.speculative_tokens:
        argv += ["--speculative-tokens", str(settings.speculative_tokens)]
    argv += list(settings.extra_args)
    return [EngineCommand(0, argv, {})], []
