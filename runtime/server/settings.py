"""What the HTTP server is configured with: names, limits, key, sampling defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwen35.runtime.server.media_parts import VisionServing

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# Keys of generation_config.json that become per-request sampling defaults (vLLM's behaviour).
SAMPLING_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                         "presence_penalty", "frequency_penalty")


@dataclass
class ServerSettings:
    """HTTP-side settings; capacity limits live in the engine's EngineConfig."""

    served_model_names: list[str]
    max_model_len: int
    model_root: str = ""
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float | None = 600.0  # seconds per request, queueing included; None: no limit
    body_timeout: float = 60.0  # seconds for a request body to arrive in full (a 32 MB body at ~0.5 MB/s)
    header_timeout: float = 10.0  # seconds for a request's head to arrive after connecting or after the last answer
    max_connections: int = 1024  # open connections and requests in flight; more get 503 at once
    max_n: int = 16
    retry_after_seconds: int = 1
    text_only: bool = True  # image and video parts refused (a checkpoint without a vision tower)
    vision: VisionServing | None = None  # processor configs and media policy; needed when text_only is False
    sampling_defaults: dict[str, Any] = field(default_factory=dict)
    default_max_tokens: int | None = None  # max_tokens of a request that names none (None: the rest of the context)

    def validate(self) -> None:
        """Raise ValueError naming the first unusable setting."""
        if not self.served_model_names or not all(self.served_model_names):
            raise ValueError("served_model_names must hold at least one non-empty name")
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        for name in ("body_timeout", "header_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.default_max_tokens is not None and self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {self.max_n}")
        if not self.text_only and self.vision is None:
            raise ValueError("text_only=False needs vision settings (VisionServing) to take images and videos")


def sampling_defaults_from(generation_config: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields a checkpoint's generation_config.json sets (do_sample false: greedy)."""
    defaults = {key: generation_config[key] for key in SAMPLING_DEFAULT_KEYS
                if isinstance(generation_config.get(key), (int, float)) and not isinstance(generation_config[key], bool)}
    if generation_config.get("do_sample") is False:
        defaults["temperature"] = 0.0
    return defaults
