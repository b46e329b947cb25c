"""`qwen35 serve`: run the bundled runtime as an OpenAI-compatible HTTP server."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

# Torch-free: the engine's and the server's defaults, written once there.
from qwen35.runtime.server.launch import (DEFAULT_CONTEXT_CPU, DEFAULT_MAX_TOKENS_CPU, DEFAULT_CONTEXT_GPU, PREFILL_CHUNK_CPU, PREFILL_CHUNK_GPU,
                                          ServeOptions)

HELP = """Serve a Qwen3.5 checkpoint with the bundled runtime behind an OpenAI-compatible API.

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
GET /metrics (Prometheus). Reasoning comes back as `reasoning_content`; tool calls in the
qwen3_coder format come back as OpenAI `tool_calls`. Chat messages may carry `image_url` and
`video_url` parts (data: or http(s) URLs; local files only under --allowed-local-media-path)
and the request `mm_processor_kwargs` (fps, num_frames, min/max_pixels). Logs go to stderr.

**Examples**

```
qwen35 demo-model ./qwen35-demo
qwen35 serve --model ./qwen35-demo
qwen35 serve --model Qwen/Qwen3.5-0.8B --device cuda --port 8000
QWEN35_API_KEY=secret qwen35 serve --model ./ckpt --max-running-requests 16
qwen35 serve --model Qwen/Qwen3.5-9B --device cuda --speculative-tokens 3
qwen35 serve --model ./qwen35-demo --max-model-len 4096
qwen35 serve --model ./qwen35-demo --allowed-local-media-path ~/pictures
curl http://127.0.0.1:8000/v1/chat/completions \\
  -H 'Content-Type: application/json' \\
  -d '{"messages": [{"role": "user", "content": "Hello"}]}'
```
"""


def serve(
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint directory or hub id (from the local HF cache)."),
    host: str = typer.Option(ServeOptions.host, "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(ServeOptions.port, "--port", help="TCP port (0 picks a free one)."),
    device: str = typer.Option(ServeOptions.device, "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option(ServeOptions.dtype, "--dtype", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32."),
    served_model_name: Optional[List[str]] = typer.Option(
        None, "--served-model-name", help="Name(s) clients use in `model` (default: the --model value)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="QWEN35_API_KEY",
                                          help="Require `Authorization: Bearer KEY` on /v1 (env QWEN35_API_KEY)."),
    max_model_len: Optional[int] = typer.Option(
        None, "--max-model-len", help=f"Context per request in tokens (default {DEFAULT_CONTEXT_CPU} on CPU, {DEFAULT_CONTEXT_GPU} on GPU)."),
    max_running_requests: int = typer.Option(ServeOptions.max_running_requests, "--max-running-requests", help="Requests decoded together."),
    max_queue: int = typer.Option(ServeOptions.max_queue, "--max-queue", help="Requests waiting beyond those; more get 503."),
    request_timeout: float = typer.Option(ServeOptions.request_timeout, "--request-timeout", help="Seconds a request may take in all."),
    seed: int = typer.Option(ServeOptions.seed, "--seed", help="Seed for requests that do not set their own."),
    prefill_chunk_size: Optional[int] = typer.Option(
        None, "--prefill-chunk-size", help=f"Prompt tokens per chunk (default {PREFILL_CHUNK_CPU} on CPU, {PREFILL_CHUNK_GPU} on GPU); "
                                           "a step prefills up to two chunks."),
    speculative_tokens: int = typer.Option(
        ServeOptions.speculative_tokens, "--speculative-tokens",
        help="MTP speculative decoding: draft tokens per step, verified in one forward (0: off; try 2 or 3)."),
    no_prefix_caching: bool = typer.Option(
        not ServeOptions.prefix_caching, "--no-prefix-caching",
        help="Prefill every prompt from its first token (by default cached prefixes are reused: KV pages plus "
             "Gated DeltaNet state checkpoints)."),
    default_max_tokens: Optional[int] = typer.Option(
        None, "--default-max-tokens",
        help=f"max_tokens of a request that names none (default {DEFAULT_MAX_TOKENS_CPU} on CPU; the rest of the "
             "context on GPU)."),
    allowed_local_media_path: Optional[str] = typer.Option(
        None, "--allowed-local-media-path",
        help="Let image/video parts name local files (file:// or paths) under this directory; off by default."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve a Qwen3.5 checkpoint over an OpenAI-compatible HTTP API."""
    from qwen35.runtime.server.launch import bind_socket, build_app, run_app

    options = ServeOptions(model=model, host=host, port=port, device=device, dtype=dtype,
                           served_model_names=list(served_model_name or []), api_key=api_key or None,
                           max_model_len=max_model_len, max_running_requests=max_running_requests,
                           max_queue=max_queue, request_timeout=request_timeout, seed=seed,
                           speculative_tokens=speculative_tokens, prefix_caching=not no_prefix_caching,
                           prefill_chunk_size=prefill_chunk_size,
                           allowed_local_media_path=allowed_local_media_path,
                           default_max_tokens=default_max_tokens)
    options.validate()
    sock = bind_socket(host, port)
    app, summary = build_app(options, progress=sys.stderr.isatty())
    bound_port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    base = f"http://{shown_host}:{bound_port}/v1"
    auth = ' -H "Authorization: Bearer $QWEN35_API_KEY"' if options.api_key else ""
    pools = summary["pools"]
    checkpoints = (f", {pools['prefix_checkpoints']} prefix-cache checkpoints ({pools['checkpoint_bytes'] / 2**30:.2f} GiB)"
                   if pools and pools["prefix_checkpoints"] else "")
    pool_line = (f"  pools: {pools['state_slots']} state slots, {pools['kv_tokens']} KV tokens in pages of "
                 f"{pools['page_size']} ({pools['allocated_bytes'] / 2**30:.2f} GiB){checkpoints}\n" if pools else "")
    print(f"serving {summary['model']} ({summary['device']}, {summary['dtype']}, {summary['kernels']} kernels, context "
          f"{summary['max_model_len']}, {summary['max_running_requests']} concurrent) at {base}\n{pool_line}"
          f"  try: curl {base}/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
          f"         -d '{{\"model\": \"{summary['model']}\", \"messages\": [{{\"role\": \"user\", "
          f"\"content\": \"Hello\"}}]}}'\n"
          f"  or:  OpenAI(base_url=\"{base}\", api_key=\"{'<your key>' if options.api_key else 'none'}\")\n"
          f"  metrics at {base[:-3]}/metrics; Ctrl+C stops", file=sys.stderr, flush=True)
    if os.environ.get("QWEN35_DEBUG"):
        log_level = "debug"
    run_app(app, sock, log_level)


def register(app: typer.Typer) -> None:
    """Add `serve` to the CLI."""
    app.command("serve", help=HELP)(serve)
