"""TTFT and inter-token latency under Poisson arrivals, through the real HTTP server run in-process.

The app is the one `qwen35 serve` runs (create_app over an AsyncEngine), here on the bench's
engine, served by uvicorn on a free port in a thread. Requests stream /v1/completions
with token-id prompts, ignore_eos and return_token_ids, so every generated token arrives as
its own event: TTFT is arrival to first event, inter-token latency the gaps between events.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time
from pathlib import Path

from qwen35.runtime.bench.workloads import Workload, random_prompts

MODEL_NAME = "qwen35-bench"


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.fmean(ordered)}


def _start_server(engine, root: Path, workload: Workload):
    """(uvicorn server, thread, port) serving the bench's LLMEngine; raises ImportError without the server extras."""
    import uvicorn

    from qwen35.runtime.engine.async_engine import AsyncEngine
    from qwen35.runtime.server.app import create_app
    from qwen35.runtime.server.launch import bind_socket
    from qwen35.runtime.server.settings import ServerSettings

    settings = ServerSettings(served_model_names=[MODEL_NAME], max_model_len=engine.config.max_model_len,
                              model_root=str(root), request_timeout=None, max_n=1)
    app = create_app(AsyncEngine(engine), engine.tokenizer, settings)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the bench server did not start")
        time.sleep(0.01)
    return server, thread, sock


async def _one_request(client, url: str, prompt: list[int], max_tokens: int, delay: float) -> tuple[float, list[float]]:
    await asyncio.sleep(delay)
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "stream": True, "return_token_ids": True}
    start = time.perf_counter()
    events = []
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[len("data: "):])
            if "error" in payload:
                raise RuntimeError(f"the server failed a request: {payload['error']}")
            choices = payload.get("choices") or []
            if choices and choices[0].get("token_ids"):
                events.extend([time.perf_counter()] * len(choices[0]["token_ids"]))
    return start, events


async def _drive(port: int, workload: Workload, vocab: int, seed: int) -> tuple[list, float]:
    import httpx

    prompts = random_prompts(workload.server_requests, workload.server_prompt_len, seed=seed, vocab=vocab)
    clock = random.Random(seed)
    delays, now = [], 0.0
    for _ in prompts:
        now += clock.expovariate(workload.server_rate)
        delays.append(now)
    url = f"http://127.0.0.1:{port}/v1/completions"
    limits = httpx.Limits(max_connections=workload.server_requests + 8)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one_request(client, url, p, workload.server_max_tokens, d)
                                         for p, d in zip(prompts, delays)))
        return results, time.perf_counter() - start


def poisson_load(engine, checkpoint: str | Path, workload: Workload, seed: int = 0) -> dict:
    """Latency figures of the served LLMEngine under Poisson load; {'skipped': why} when it cannot run."""
    root = Path(checkpoint)
    if engine.tokenizer is None:
        return {"skipped": "the checkpoint has no tokenizer.json (the server needs one)"}
    try:
        server, thread, sock = _start_server(engine, root, workload)
    except ImportError as error:
        return {"skipped": f"the server's packages are missing ({error.name}): pip install fastapi uvicorn"}
    try:
        results, wall = asyncio.run(_drive(sock.getsockname()[1], workload, engine.runner.vocab_size, seed))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    ttft = [(events[0] - start) * 1e3 for start, events in results if events]
    gaps = [(b - a) * 1e3 for _, events in results for a, b in zip(events, events[1:])]
    tokens = sum(len(events) for _, events in results)
    return {"requests": workload.server_requests, "rate_per_s": workload.server_rate,
            "prompt_tokens": workload.server_prompt_len, "max_tokens": workload.server_max_tokens,
            "ttft_ms": _percentiles(ttft), "itl_ms": _percentiles(gaps), "output_tokens": tokens,
            "wall_s": wall, "output_tokens_per_s": tokens / wall if wall else None}
