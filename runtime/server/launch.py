"""Build a ready-to-run server from a checkpoint: model, tokenizer, engine, app and a bound socket."""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from qwen35.planner.errors import InputError

from qwen35.runtime.engine.config import MAX_SPECULATIVE_TOKENS, EngineConfig

DEFAULT_CONTEXT_CPU = 8192
DEFAULT_CONTEXT_GPU = 32768
PREFILL_CHUNK_CPU = 256
# max_tokens of a request that names none, on the CPU: a whole 8K context takes minutes there.
DEFAULT_MAX_TOKENS_CPU = 256
PREFILL_CHUNK_GPU = 2048


@dataclass
class ServeOptions:
    """Everything `qwen35 serve` takes."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    dtype: str = "auto"
    served_model_names: list[str] = field(default_factory=list)
    api_key: str | None = None
    max_model_len: int | None = None
    max_running_requests: int = EngineConfig.max_running_requests
    max_queue: int = EngineConfig.max_queue
    request_timeout: float | None = 600.0
    prefill_chunk_size: int | None = None  # default: PREFILL_CHUNK_CPU or PREFILL_CHUNK_GPU
    seed: int = EngineConfig.seed
    allowed_local_media_path: str | None = None  # image/video parts may name files under this directory
    # Media URLs reach only public addresses; these CIDRs (e.g. "10.0.0.0/8") are opened besides.
    allowed_media_networks: list[str] = field(default_factory=list)
    speculative_tokens: int = 0  # MTP draft tokens per decode step; 0: no speculation
    default_max_tokens: int | None = None  # for requests that name none (default: DEFAULT_MAX_TOKENS_CPU on CPU)
    prefix_caching: bool = EngineConfig.prefix_caching  # reuse cached prompt prefixes across requests

    def validate(self) -> None:
        """Raise InputError naming the first option out of range."""
        for name in ("max_running_requests", "prefill_chunk_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1", "pass a positive number")
        if self.default_max_tokens is not None and self.default_max_tokens < 1:
            raise InputError("--default-max-tokens must be at least 1", "pass e.g. --default-max-tokens 512")
        if self.max_queue < 0:
            raise InputError("--max-queue must be 0 or more", "pass 0 to refuse requests beyond the running ones")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise InputError("--max-model-len must be at least 16 tokens", "pass e.g. --max-model-len 8192")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise InputError("--request-timeout must be positive", "pass seconds, e.g. --request-timeout 600")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port} is not a TCP port", "pass 0-65535 (0 picks a free port)")
        if not 0 <= self.speculative_tokens <= MAX_SPECULATIVE_TOKENS:
            raise InputError(f"--speculative-tokens {self.speculative_tokens} is out of range",
                             f"pass 0 (off) to {MAX_SPECULATIVE_TOKENS}; 1-3 suits Qwen3.5's single MTP layer")
        for network in self.allowed_media_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise InputError(f"--allowed-media-network {network!r} is not an IP network",
                                 "pass CIDR notation, e.g. 10.0.0.0/8 or fd00::/8") from None
        if self.allowed_local_media_path is not None and not Path(self.allowed_local_media_path).is_dir():
            raise InputError(f"--allowed-local-media-path {self.allowed_local_media_path} is not a directory",
                             "pass an existing directory whose files requests may name")


def resolve_device(device: str) -> str:
    """'auto' -> cuda when a GPU is visible, else cpu; 'cuda' without a GPU is an input error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown --device '{device}'", "choose auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is visible", "use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> bf16 on a GPU, fp32 on the CPU (where bf16 matmuls are slow)."""
    if dtype == "auto":
        return "fp32" if device == "cpu" else "bf16"
    if dtype not in ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32"):
        raise InputError(f"unknown --dtype '{dtype}'", "choose auto, bf16, fp16 or fp32")
    return dtype


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one); InputError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror})",
                         "pick another --port, or stop what is using it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _generation_config(root: Path) -> dict:
    path = root / "generation_config.json"
    try:
        return json.loads(path.read_text("utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def build_app(options: ServeOptions, progress: bool = True):
    """Load the checkpoint and return (app, summary) ready for `run_app`."""
    from qwen35.runtime.model.checkpoint import resolve_checkpoint_dir

    options.validate()
    root = resolve_checkpoint_dir(options.model)  # before the heavy imports: a typo fails fast
    from qwen35.runtime.engine.async_engine import AsyncEngine
    from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
    from qwen35.runtime.model.loader import load_model
    from qwen35.runtime.server.app import create_app
    from qwen35.runtime.server.settings import ServerSettings, sampling_defaults_from
    from qwen35.runtime.tokenizer.tokenizer import load_tokenizer

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    tokenizer = load_tokenizer(root)
    model = load_model(root, device=device, dtype=dtype, progress=progress)
    text = model.config.text
    context = options.max_model_len or min(text.max_position_embeddings,
                                           DEFAULT_CONTEXT_CPU if device == "cpu" else DEFAULT_CONTEXT_GPU)
    if context > text.max_position_embeddings:
        raise InputError(f"--max-model-len {context} exceeds the model's {text.max_position_embeddings} positions",
                         f"pass at most {text.max_position_embeddings}")
    if options.speculative_tokens and model.mtp is None:
        raise InputError(f"--speculative-tokens needs the checkpoint's MTP head, and {root} has none "
                         "(mtp_num_hidden_layers is 0)", "drop --speculative-tokens, or serve a checkpoint with mtp.*")
    chunk = options.prefill_chunk_size or (PREFILL_CHUNK_CPU if device == "cpu" else PREFILL_CHUNK_GPU)
    config = EngineConfig(max_running_requests=options.max_running_requests, max_queue=options.max_queue,
                          max_model_len=context, prefill_chunk_size=chunk, seed=options.seed,
                          speculative_tokens=options.speculative_tokens, prefix_caching=options.prefix_caching)
    runner, pools = build_runner(model, config)
    if runner.num_slots < options.max_running_requests:
        logging.getLogger("qwen35").warning(
            "memory holds %d of the %d requested running requests (state slots); serving %d",
            runner.num_slots, options.max_running_requests, runner.num_slots)
    running = config.max_running_requests = runner.num_slots
    eos = set(DEFAULT_STOP_TOKEN_IDS) | set(text.eos_token_ids) | set(tokenizer.eos_token_ids)
    engine = AsyncEngine(LLMEngine(runner, config, tokenizer, eos_token_ids=sorted(eos)))
    # A local checkpoint is served under its directory name; the path as given stays an alias.
    default_name = Path(options.model).name if Path(options.model).is_dir() else options.model
    names = options.served_model_names or list(dict.fromkeys([default_name, options.model]))
    from qwen35.runtime.server.media_parts import vision_serving
    from qwen35.runtime.vision import MediaPolicy

    local_media = Path(options.allowed_local_media_path) if options.allowed_local_media_path else None
    # Runners that take no media (MTP speculation, for now) serve text only.
    policy = MediaPolicy(local_media_dir=local_media, allowed_networks=tuple(options.allowed_media_networks))
    vision = (vision_serving(root, model.config, policy)
              if runner.takes_media else None)
    settings = ServerSettings(served_model_names=names, max_model_len=context, model_root=str(root),
                              api_key=options.api_key, request_timeout=options.request_timeout,
                              max_n=min(16, running + options.max_queue),
                              text_only=vision is None, vision=vision,
                              sampling_defaults=sampling_defaults_from(_generation_config(root)),
                              default_max_tokens=options.default_max_tokens
                              or (DEFAULT_MAX_TOKENS_CPU if device == "cpu" else None))
    summary = {"model": names[0], "root": str(root), "device": device, "dtype": dtype, "max_model_len": context,
               "max_running_requests": running, "speculative_tokens": options.speculative_tokens,
               "kernels": runner.kernels.name, "pools": pools}
    return create_app(engine, tokenizer, settings), summary


def build_runner(model, config: EngineConfig):
    """The engine's model runner and its pool sizing report; a budget too small is bad input.

    Its pools are sized like the planner's bundled plan: on a GPU from free memory measured after
    a warm-up of one step's prompt tokens; on the CPU exactly the requested sequences at full context.
    """
    from qwen35.runtime.engine.runner import build_runner as build

    try:
        return build(model, config)
    except ValueError as error:
        raise InputError(str(error), "pass a smaller --max-model-len, or free GPU memory") from None


def log_config(level: str = "info") -> dict:
    """uvicorn logging with every record on stderr (stdout is for data)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "qwen35")},
    }


def run_app(app, sock: socket.socket, level: str = "info") -> None:
    """Serve the app on an already bound socket until interrupted."""
    from qwen35.runtime.server.transport import build_server

    logging.getLogger("qwen35").setLevel(level.upper())
    build_server(app, log_config=log_config(level)).run(sockets=[sock])
