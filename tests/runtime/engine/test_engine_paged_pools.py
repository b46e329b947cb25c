"""The serving engine over the paged runner: packed prefill, KV page admission, pages handed back.

Greedy outputs through the AsyncEngine must equal offline generation with the eager runner,
also when the KV pool holds fewer pages than rows x context (admission then waits for pages),
and every page and state slot must be back in the pool once the engine is idle again.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import torch

from qwen35.planner.errors import InputError
from qwen35.runtime.bench.agreement import greedy_generate, spread_weights
from qwen35.runtime.engine.async_engine import AsyncEngine, EngineConfig
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.model.loader import load_model

PAGE = 16


@pytest.fixture(scope="module")
def model(demo_path):
    loaded = load_model(demo_path, progress=False)
    spread_weights(loaded, seed=7)  # so greedy continuations are not one repeated token
    return loaded


class CountingPagedRunner(PagedModelRunner):
    """The paged runner, recording how many rows each packed prefill carried and every release."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefill_rows: list[int] = []
        self.released: list[int] = []

    def prefill_batch(self, rows, chunks, **kwargs):
        self.prefill_rows.append(len(rows))
        return super().prefill_batch(rows, chunks, **kwargs)

    def release_row(self, row):
        self.released.append(row)
        super().release_row(row)


def prompts_of(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 248000, (n,), generator=generator).tolist() for n in lengths]


async def _until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


def serve_all(runner, prompts, budgets, config: EngineConfig) -> tuple[list[list[int]], AsyncEngine]:
    """Submit every prompt at once; greedy tokens of each, and the engine (stopped) for inspection."""
    async def run():
        engine = AsyncEngine(runner, config=config)
        await engine.start()
        try:
            handles = [engine.submit(p, [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)])[0]
                       for p, n in zip(prompts, budgets)]
            results = [[t async for output in handle for t in output.token_ids] for handle in handles]
            await _until(lambda: runner.blocks.num_free_pages == runner.blocks.num_pages)
            return results, engine
        finally:
            await engine.stop()

    return asyncio.run(run())


def test_a_short_page_pool_serves_everyone_in_turn_and_gets_every_page_back(model):
    lengths, budgets = (40, 7, 65, 16, 33, 1), [9, 5, 12, 3, 8, 6]
    prompts = prompts_of(lengths)
    max_len = 96
    expected = greedy_generate(TorchModelRunner(model, 3, max_len), prompts, budgets, chunk_size=32)
    # Three rows but pages for about one and a half full contexts: admission must wait for pages.
    num_pages = 9
    runner = CountingPagedRunner(model, 3, max_len, page_size=PAGE, num_pages=num_pages)
    config = EngineConfig(max_running_requests=3, max_model_len=max_len, prefill_chunk_size=32, max_prefill_tokens=64)
    results, engine = serve_all(runner, prompts, budgets, config)
    assert results == expected
    assert engine.scheduler.config.kv_pages == num_pages and engine.scheduler.free_pages == num_pages
    assert runner.slots.num_free == 3
    assert set(runner.released) == {0, 1, 2}
    assert max(runner.prefill_rows) > 1, "prompt chunks of several rows should share one packed forward"


def test_pool_admission_is_off_when_every_row_holds_a_full_context(model):
    runner = PagedModelRunner(model, 2, 64, page_size=PAGE)
    engine = AsyncEngine(runner, config=EngineConfig(max_running_requests=2, max_model_len=64))
    assert engine.scheduler.config.kv_pages is None


def test_a_request_beyond_the_page_pool_is_refused_before_it_queues(model):
    runner = PagedModelRunner(model, 2, 128, page_size=PAGE, num_pages=4)  # 64 tokens in all

    async def run():
        engine = AsyncEngine(runner, config=EngineConfig(max_running_requests=2, max_model_len=128))
        await engine.start()
        try:
            with pytest.raises(ValueError, match="KV pool of 64 tokens"):
                engine.submit(list(range(1, 61)), [SamplingParams(max_tokens=10)])
            assert engine.num_waiting == 0
        finally:
            await engine.stop()

    asyncio.run(run())


def test_an_abort_hands_its_pages_back(model):
    runner = CountingPagedRunner(model, 2, 200, page_size=PAGE)

    async def run():
        engine = AsyncEngine(runner, config=EngineConfig(max_running_requests=2, max_model_len=200))
        await engine.start()
        try:
            (handle,) = engine.submit(list(range(1, 50)), [SamplingParams(max_tokens=100, ignore_eos=True)])
            await handle.__anext__()
            assert runner.blocks.num_free_pages < runner.blocks.num_pages
            held = runner.blocks.num_pages - runner.blocks.num_free_pages
            assert engine.kv_cache_usage == pytest.approx(held / runner.blocks.num_pages) and held >= 4
            handle.abort()
            await _until(lambda: runner.blocks.num_free_pages == runner.blocks.num_pages)
            assert runner.slots.num_free == 2 and runner.released and engine.kv_cache_usage == 0
        finally:
            await engine.stop()

    asyncio.run(run())


def _options(demo_path, **overrides):
    from qwen35.runtime.server.launch import ServeOptions

    return ServeOptions(**{"model": str(demo_path), "device": "cpu", "max_model_len": 64, "max_running_requests": 2,
                           **overrides})


def test_serve_picks_the_paged_runner_with_pools_sized_like_the_eager_cache(demo_path):
    from qwen35.runtime.server.launch import build_app

    _, summary = build_app(_options(demo_path), progress=False)
    assert summary["runner"] == "paged"
    pools = summary["pools"]
    assert pools["state_slots"] == 2 and pools["kv_tokens"] == 2 * 64 and pools["page_size"] == 16
    _, summary = build_app(_options(demo_path, runner="eager"), progress=False)
    assert summary["runner"] == "eager" and summary["pools"] is None
    _, summary = build_app(_options(demo_path, speculative_tokens=2), progress=False)
    assert summary["runner"] == "paged" and summary["pools"]["speculation_bytes"] > 0
    assert summary["pools"]["kv_tokens"] == 2 * 80, "rows hold the context plus a verify's k + 1, in whole pages"
    _, summary = build_app(_options(demo_path, speculative_tokens=2, runner="eager"), progress=False)
    assert summary["runner"] == "eager"


@pytest.mark.parametrize("rows, context, drafts", [(1, 1000, 0), (1, 512, 3), (2, 512, 3)])
def test_cpu_pools_hold_every_row_in_whole_pages_whatever_the_context(demo_path, rows, context, drafts):
    """Contexts that are not whole pages (or become uneven with a verify's k + 1) still fit rows x context."""
    from qwen35.runtime.server.launch import build_app

    app, summary = build_app(_options(demo_path, max_running_requests=rows, max_model_len=context,
                                      speculative_tokens=drafts), progress=False)
    engine = app.state.qwen35.engine
    assert summary["pools"]["state_slots"] == rows and summary["max_running_requests"] == rows
    assert engine.scheduler.config.kv_pages is None, "every row holds a full context: no page admission"


def test_serve_rejects_unknown_runners(demo_path):
    with pytest.raises(InputError, match="unknown --runner 'fast'"):
        _options(demo_path, runner="fast").validate()


@pytest.mark.gpu
def test_serve_on_cuda_sizes_pools_from_measured_memory_and_matches_eager(demo_path):
    """On a GPU: measured pools, CUDA graphs, and the paged engine's greedy tokens equal the eager runner's."""
    from qwen35.runtime.server.launch import ServeOptions, build_runner

    model = load_model(demo_path, device="cuda", dtype="fp32", progress=False)
    spread_weights(model, seed=7)
    options = ServeOptions(model=str(demo_path), device="cuda", max_running_requests=4)
    runner, pools = build_runner(model, options, 256, 64)
    assert pools["measured"]["budget_bytes"] > 0 and runner.graphs is not None
    assert 0.95 <= pools["allocated_over_planned"] <= 1.05
    prompts = prompts_of((40, 7, 65, 16, 33, 1), seed=3)
    budgets = [24, 5, 30, 3, 17, 9]
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        expected = greedy_generate(TorchModelRunner(model, 4, 256), prompts, budgets, chunk_size=32)
        config = EngineConfig(max_running_requests=4, max_model_len=256, prefill_chunk_size=32, max_prefill_tokens=64)
        results, _ = serve_all(runner, prompts, budgets, config)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert results == expected
