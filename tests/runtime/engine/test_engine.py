"""The engine against the whole-prompt forward: same greedy tokens and logprobs through churn, chunking,
page boundaries and short page pools; every slot and page back once idle.

Checkpoints: the demo checkpoint (its matrices redrawn at O(1/sqrt(fan_in)), see spread_weights:
with the demo's small init greedy decoding repeats one token and any two paths agree trivially)
and a tiny transformers-written one. Prompt lengths sit on and around page and GDN-chunk
boundaries; fewer slots than prompts and a tight page pool force slots and pages to be reused
while other sequences are still running.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import torch

from engine_helpers import assert_matches_reference, greedy, run_engine
from qwen35.runtime import LLM
from qwen35.runtime.bench.agreement import greedy_generate, spread_weights
from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import ModelRunner, build_runner
from qwen35.runtime.model.loader import load_model

AWKWARD_LENGTHS = (1, 15, 16, 17, 63, 64, 65, 130)
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def demo_model(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=1)
    return model


def prompts_of(lengths, vocab: int = 248000, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize("page_size", [16, 64])
def test_greedy_equals_the_full_forward_through_churn(demo_model, page_size):
    """Eight prompts around page and chunk boundaries on three slots, chunks of 48: every token and logprob."""
    requests = [(prompt, None) for prompt in prompts_of(AWKWARD_LENGTHS, seed=2)]
    results = run_engine(demo_model, requests, 5, max_running_requests=3, max_model_len=160, prefill_chunk_size=48,
                         page_size=page_size)
    for request, result in zip(requests, results):
        assert_matches_reference(demo_model, request, result, 5)
    assert len({result[2].slot for result in results}) == 3, "slots are reused"


def test_a_short_page_pool_serves_everyone_in_turn_and_gets_every_page_back(demo_model):
    prompts = prompts_of((40, 7, 65, 16, 33, 1), seed=4)
    budgets = [9, 5, 12, 3, 8, 6]
    plain = EngineConfig(max_running_requests=3, max_model_len=96, prefill_chunk_size=32, max_prefill_tokens=64)
    expected = greedy_generate(demo_model, plain, prompts, budgets)
    # Three slots but pages for about one and a half full contexts: admission must wait for pages.
    runner = ModelRunner(demo_model, plain, num_slots=3, num_pages=9)
    engine = LLMEngine(runner, plain)
    packed, seqs = [], [engine.add_request(p, [greedy(n, None)])[0] for p, n in zip(prompts, budgets)]
    while engine.has_work:
        packed.append(engine.scheduler.num_running)
        engine.step()
    assert [seq.output_ids for seq in seqs] == expected
    assert engine.scheduler.num_available_pages == 9 and engine.scheduler.slots.num_free == 3
    assert max(packed) > 1, "several sequences should run together"


def test_a_request_beyond_the_page_pool_is_refused_before_it_queues(demo_model):
    config = EngineConfig(max_running_requests=2, max_model_len=128)
    engine = LLMEngine(ModelRunner(demo_model, config, num_slots=2, num_pages=4), config)  # 64 tokens in all
    with pytest.raises(ValueError, match="KV pool of 64 tokens"):
        engine.add_request(list(range(1, 61)), [greedy(10)])
    assert engine.scheduler.num_waiting == 0


async def _until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


def test_an_abort_hands_its_slot_and_pages_back(demo_model):
    config = EngineConfig(max_running_requests=2, max_model_len=200)
    inner = LLMEngine(build_runner(demo_model, config)[0], config)
    books = inner.scheduler

    async def run():
        engine = AsyncEngine(inner)
        await engine.start()
        try:
            (handle,) = engine.submit(list(range(1, 50)), [greedy(100)])
            await handle.__anext__()
            held = books.blocks.num_pages - books.num_available_pages
            assert engine.kv_cache_usage == pytest.approx(held / books.blocks.num_pages) and held >= 4
            handle.abort()
            outputs = [output async for output in handle]
            await _until(lambda: books.num_available_pages == books.blocks.num_pages)
            assert outputs[-1].finish_reason == "abort" and books.slots.num_free == 2 and engine.kv_cache_usage == 0
        finally:
            await engine.stop()

    asyncio.run(run())


def test_llm_generate_equals_the_served_engine(demo_path):
    llm = LLM(demo_path, progress=False, prefill_chunk_size=16, max_model_len=80, max_running_requests=2)
    spread_weights(llm.model, seed=5)
    prompts = prompts_of((9, 33, 64), seed=6)
    params = greedy(10, None)
    expected = [output.token_ids for output in llm.generate(prompts, params)]
    config = EngineConfig(max_running_requests=2, max_model_len=80, prefill_chunk_size=16, max_prefill_tokens=32)

    async def serve() -> list[list[int]]:
        engine = AsyncEngine(LLMEngine(build_runner(llm.model, config)[0], config))
        await engine.start()
        try:
            handles = [engine.submit(p, [params])[0] for p in prompts]
            return [[t async for output in handle for t in output.token_ids] for handle in handles]
        finally:
            await engine.stop()

    assert asyncio.run(serve()) == expected


def _options(demo_path, **overrides):
    from qwen35.runtime.server.launch import ServeOptions

    return ServeOptions(**{"model": str(demo_path), "device": "cpu", "max_model_len": 64, "max_running_requests": 2,
                           **overrides})


def test_serve_sizes_cpu_pools_for_every_slot_at_full_context(demo_path):
    from qwen35.runtime.server.launch import build_app

    _, summary = build_app(_options(demo_path), progress=False)
    pools = summary["pools"]
    assert summary["kernels"] == "torch"
    assert pools["state_slots"] == 2 and pools["kv_tokens"] == 2 * 64 and pools["page_size"] == 16
    _, summary = build_app(_options(demo_path, speculative_tokens=2), progress=False)
    assert summary["pools"]["speculation_bytes"] > 0
    assert summary["pools"]["kv_tokens"] == 2 * 80, "slots hold the context plus a verify's k + 1, in whole pages"


@pytest.mark.parametrize("slots, context, drafts", [(1, 1000, 0), (1, 512, 3), (2, 512, 3)])
def test_cpu_pools_hold_every_slot_in_whole_pages_whatever_the_context(demo_path, slots, context, drafts):
    """Contexts that are not whole pages (or become uneven with a verify's k + 1) still fit slots x context."""
    from qwen35.runtime.server.launch import build_app

    app, summary = build_app(_options(demo_path, max_running_requests=slots, max_model_len=context,
                                      speculative_tokens=drafts), progress=False)
    books = app.state.qwen35.engine.engine.scheduler
    assert summary["pools"]["state_slots"] == slots and summary["max_running_requests"] == slots
    for _ in range(slots):  # every slot can take a request of the whole context at once
        capacity = books.capacity_tokens(1, context - 1)
        assert len(books.blocks.allocate(capacity)) == -(-capacity // books.blocks.page_size)  # PoolExhausted if not


# Runs in a fresh process with TRITON_INTERPRET=1. PaddedEagerGraphs stands in for DecodeGraphs: it
# pads batches to 1, 2 or 4 exactly as graph replay does (padding row, state slot -1, scratch page)
# but runs eagerly, so the padding path of the Triton kernels is checked without a GPU.
TRITON_AGREEMENT = """
import sys
import torch
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import ModelRunner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.bench.agreement import guessing_mtp_head, spread_weights
from qwen35.runtime.model.loader import load_model


class PaddedEagerGraphs:
    sizes = [1, 2, 4]

    def __init__(self, runner):
        self.runner = runner
        self.padded = []

    def padded_size(self, batch):
        size = next((size for size in self.sizes if size >= batch), None)
        self.padded.append((batch, size))
        return size

    def replay(self, size):
        return self.runner._decode_hidden(self.runner.inputs[:, :size])


def generate(kernels, graphs, drafts=0, lengths=(4, 6, 3, 5, 4)):
    config = EngineConfig(max_running_requests=4, max_model_len=80, prefill_chunk_size=32, kernels=kernels,
                          speculative_tokens=drafts)
    runner = ModelRunner(model, config, num_slots=4, num_pages=16)
    assert runner.kernels.name == kernels
    if graphs:
        runner.graphs = PaddedEagerGraphs(runner)
    engine = LLMEngine(runner, config)
    seqs = [engine.add_request(p, [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, logprobs=0)])[0]
            for p, n in zip(prompts, lengths)]
    logprobs = {seq.seq_id: [] for seq in seqs}  # per sequence: speculation gains several tokens a step
    while engine.has_work:
        for seq, out in engine.step():
            assert out.finish_reason != "error", out.error
            logprobs[seq.seq_id] += [lp.logprob for lp in out.logprobs or []]
    assert engine.scheduler.num_available_pages == 16
    if drafts:
        assert 0 < engine.accepted_tokens < engine.draft_tokens, (engine.accepted_tokens, engine.draft_tokens)
    return [s.output_ids for s in seqs], torch.tensor(sum(logprobs.values(), [])), runner


torch.set_num_threads(1)
model = load_model(sys.argv[1], progress=False)
generator = torch.Generator().manual_seed(7)
prompts = [torch.randint(0, 248000, (n,), generator=generator).tolist() for n in (1, 17, 70, 5, 33)]
ours, ours_lp, runner = generate("triton", graphs=True)
reference, reference_lp, _ = generate("torch", graphs=False)
assert ours == reference, (ours, reference)
torch.testing.assert_close(ours_lp, reference_lp, rtol=1e-4, atol=1e-4)
assert any(batch < size for batch, size in runner.graphs.padded)  # some batch really was padded

# Speculation on the Triton set (conv and GDN verify/commit kernels): spread weights make the tokens
# depend on the state, the guessing head makes some drafts land and some miss.
spread_weights(model, seed=2)
guessing_mtp_head(model)
prompts = [prompts[0], prompts[1], prompts[3]]  # the 70-token prompt is the slow one interpreted
reference, reference_lp, _ = generate("torch", graphs=False, lengths=(4, 6, 5))
speculated, speculated_lp, _ = generate("triton", graphs=False, drafts=2, lengths=(4, 6, 5))
assert speculated == reference, (speculated, reference)
torch.testing.assert_close(speculated_lp, reference_lp, rtol=1e-4, atol=1e-4)
"""


@pytest.mark.skipif(HAS_CUDA, reason="the GPU tests below cover the Triton path on CUDA")
def test_triton_kernel_set_equals_the_torch_set_under_the_interpreter(demo_path):
    # A fresh process: TRITON_INTERPRET must be set before triton itself is first imported.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", TRITON_AGREEMENT, str(demo_path)], env=env, check=True, timeout=600)


@pytest.fixture
def no_tf32():
    """fp32 means fp32 on the GPU: cuDNN's conv defaults to TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cuda_model(demo_path, dtype):
    model = load_model(demo_path, device="cuda", dtype=dtype, progress=False)
    spread_weights(model, seed=1)
    return model


@pytest.mark.gpu
def test_cuda_graph_decode_equals_eager(demo_path, no_tf32):
    model = _cuda_model(demo_path, torch.float32)
    prompts = prompts_of((3, 17, 64, 65, 100), seed=8)
    config = EngineConfig(max_running_requests=4, max_model_len=160, prefill_chunk_size=32)
    assert build_runner(model, config)[0].graphs.sizes == [1, 2, 4]
    # 5 prompts on 4 slots with different budgets: batches of 4, 3 (padded to 4), 2 and 1 replay.
    budgets = [24, 9, 30, 5, 17]
    eager = EngineConfig(**{**config.__dict__, "cuda_graphs": False})
    assert greedy_generate(model, config, prompts, budgets) == greedy_generate(model, eager, prompts, budgets)


@pytest.mark.gpu
def test_cuda_graph_logprobs_in_bf16(demo_path):
    model = _cuda_model(demo_path, torch.bfloat16)
    requests = [(prompt, None) for prompt in prompts_of((5, 40, 64), seed=10)]
    results = [run_engine(model, requests, 4, max_running_requests=4, max_model_len=96, cuda_graphs=graphs)
               for graphs in (True, False)]
    ours = torch.tensor([lp for _, logprobs, _ in results[0] for lp in logprobs])
    theirs = torch.tensor([lp for _, logprobs, _ in results[1] for lp in logprobs])
    assert not ours.isnan().any() and (ours - theirs).abs().max() < 5e-2


@pytest.mark.gpu
def test_triton_on_cuda_matches_the_torch_set_in_fp32(demo_path, no_tf32):
    model = _cuda_model(demo_path, torch.float32)
    prompts = prompts_of(AWKWARD_LENGTHS, seed=9)
    config = EngineConfig(max_running_requests=3, max_model_len=200, prefill_chunk_size=48)
    assert build_runner(model, config)[0].kernels.name == "triton" and not os.environ.get("TRITON_INTERPRET")
    reference = EngineConfig(**{**config.__dict__, "kernels": "torch", "cuda_graphs": False})
    assert greedy_generate(model, config, prompts, 32) == greedy_generate(model, reference, prompts, 32)


@pytest.mark.gpu
def test_serve_on_cuda_sizes_pools_from_measured_memory(demo_path):
    from qwen35.runtime.server.launch import build_runner as serve_runner

    model = load_model(demo_path, device="cuda", dtype="fp32", progress=False)
    runner, pools = serve_runner(model, EngineConfig(max_running_requests=4, max_model_len=256, prefill_chunk_size=64))
    assert pools["measured"]["budget_bytes"] > 0 and runner.graphs is not None
    assert 0.95 <= pools["allocated_over_planned"] <= 1.05
