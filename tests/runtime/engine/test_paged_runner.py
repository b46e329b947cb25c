"""The paged runner against the reference: same greedy tokens, through churn, chunking and page boundaries.

Checkpoints: the demo checkpoint (its matrices redrawn at O(1/sqrt(fan_in)), see spread_weights:
with the demo's small init every runner would greedily repeat one token and agree trivially) and
tiny transformers-written checkpoints (dense with one KV head, MoE). Prompt lengths sit on and
around page and GDN-chunk boundaries; fewer rows than prompts and a tight page pool force rows,
state slots and pages to be reused while other sequences are still running.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen35.runtime import LLM, SamplingParams
from qwen35.runtime.bench.agreement import greedy_generate, spread_weights
from qwen35.runtime.engine.async_engine import AsyncEngine, EngineConfig
from qwen35.runtime.engine.kv_pool import PoolExhausted
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.model.loader import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from qwen35_tiny_checkpoints import build_hf_model  # noqa: E402

AWKWARD_LENGTHS = (1, 15, 16, 17, 63, 64, 65, 130)
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def demo_model(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=1)
    return model


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    paths = {}
    for variant in ("dense_untied", "moe_tied"):
        paths[variant] = tmp_path_factory.mktemp(variant)
        build_hf_model(variant, seed=3).save_pretrained(paths[variant])
    return paths


def prompts_of(lengths, vocab: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]


def reference_tokens(model, prompts, max_tokens, chunk, rows=3):
    runner = TorchModelRunner(model, rows, max(map(len, prompts)) + max(max_tokens))
    return greedy_generate(runner, prompts, max_tokens, chunk_size=chunk)


@pytest.mark.parametrize("page_size", [16, 64])
def test_greedy_matches_reference_through_churn(demo_model, page_size):
    prompts = prompts_of(AWKWARD_LENGTHS, 248000)
    budgets = [5, 12, 3, 9, 7, 4, 11, 6]  # sequences finish at different steps, freeing rows mid-run
    max_len = max(AWKWARD_LENGTHS) + max(budgets)
    # Three rows, and pages for about two full rows: pages and slots are reused while others run.
    num_pages = 2 * -(-max_len // page_size) + 1
    runner = PagedModelRunner(demo_model, 3, max_len, page_size=page_size, num_pages=num_pages)
    ours = greedy_generate(runner, prompts, budgets, chunk_size=32)
    assert ours == reference_tokens(demo_model, prompts, budgets, chunk=32)
    assert all(len(set(tokens)) > 1 for tokens in ours if len(tokens) > 2)  # not a degenerate repeat
    assert runner.blocks.num_free_pages == num_pages and runner.slots.num_free == 3


def test_packed_prefill_logits_match_row_by_row(demo_model):
    prompts = prompts_of((17, 64, 5), 248000, seed=2)
    reference = TorchModelRunner(demo_model, 3, 80)
    expected = torch.stack([reference.prefill(row, p) for row, p in enumerate(prompts)])
    runner = PagedModelRunner(demo_model, 3, 80, page_size=16)
    logits = runner.prefill_batch([2, 0, 1], [prompts[2], prompts[0], prompts[1]])[[1, 2, 0]]
    assert not logits.isnan().any()
    assert ((logits - expected).norm() / expected.norm()).item() < 1e-5


@pytest.mark.parametrize("variant", ["dense_untied", "moe_tied"])
def test_tiny_transformers_checkpoints(tiny_paths, variant):
    model = load_model(tiny_paths[variant], progress=False)
    prompts = prompts_of((1, 16, 17, 40, 65), 320, seed=4)
    runner = PagedModelRunner(model, 2, 80, page_size=16, num_pages=6)
    ours = greedy_generate(runner, prompts, 8, chunk_size=16)
    assert ours == reference_tokens(model, prompts, [8] * len(prompts), chunk=16, rows=2)


def test_matches_llm_generate_and_serves_through_the_async_engine(demo_path):
    llm = LLM(demo_path, progress=False, prefill_chunk_size=16)
    spread_weights(llm.model, seed=5)
    prompts = prompts_of((9, 33, 64), 248000, seed=6)
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    expected = [output.token_ids for output in llm.generate(prompts, params)]

    runner = PagedModelRunner(llm.model, 2, 80, page_size=16)
    assert greedy_generate(runner, prompts, 10, chunk_size=16) == expected

    async def serve() -> list[list[int]]:
        engine = AsyncEngine(PagedModelRunner(llm.model, 2, 80, page_size=16),
                             config=EngineConfig(max_running_requests=2, max_model_len=80, prefill_chunk_size=16,
                                                 max_prefill_tokens=32))
        await engine.start()
        try:
            handles = [engine.submit(p, [params])[0] for p in prompts]
            results = []
            for handle in handles:
                results.append([t async for output in handle for t in output.token_ids])
            return results
        finally:
            await engine.stop()

    assert asyncio.run(serve()) == expected


def test_pool_exhaustion_names_the_shortfall(demo_model):
    runner = PagedModelRunner(demo_model, 2, 64, page_size=16, num_pages=3)
    runner.prefill(0, list(range(40)))  # three pages
    with pytest.raises(PoolExhausted, match="0 free pages"):
        runner.prefill(1, [1, 2, 3])
    runner.release_row(0)
    runner.prefill(1, [1, 2, 3])  # freed pages serve the next sequence


def test_decode_needs_a_prefilled_row(demo_model):
    runner = PagedModelRunner(demo_model, 2, 32)
    with pytest.raises(ValueError, match="prefill it first"):
        runner.decode([1], [5])


# Runs in a fresh process with TRITON_INTERPRET=1. PaddedEagerGraphs stands in for DecodeGraphs: it
# pads batches to 1, 2 or 4 exactly as graph replay does (padding row, state slot -1, scratch page)
# but runs eagerly, so the padding path of the Triton kernels is checked without a GPU.
TRITON_AGREEMENT = """
import sys
import torch
from qwen35.runtime.bench.agreement import greedy_generate
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.runner import TorchModelRunner
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
        return self.runner._run_decode(self.runner.inputs[:, :size])


torch.set_num_threads(1)
model = load_model(sys.argv[1], progress=False)
generator = torch.Generator().manual_seed(7)
prompts = [torch.randint(0, 320, (n,), generator=generator).tolist() for n in (1, 17, 70, 5, 33)]
runner = PagedModelRunner(model, 4, 80, page_size=16, num_pages=16, kernels="triton")
assert runner.kernels.name == "triton"
runner.graphs = PaddedEagerGraphs(runner)
ours = greedy_generate(runner, prompts, [4, 6, 3, 5, 4], chunk_size=32)
reference = greedy_generate(TorchModelRunner(model, 4, 80), prompts, [4, 6, 3, 5, 4], chunk_size=32)
assert ours == reference, (ours, reference)
assert any(batch < size for batch, size in runner.graphs.padded)  # some batch really was padded
assert runner.blocks.num_free_pages == 16
"""


@pytest.mark.skipif(HAS_CUDA, reason="the GPU tests below cover the Triton path on CUDA")
def test_triton_kernel_path_under_the_interpreter(tiny_paths):
    # A fresh process: TRITON_INTERPRET must be set before triton itself is first imported.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", TRITON_AGREEMENT, str(tiny_paths["dense_untied"])], env=env,
                   check=True, timeout=600)


@pytest.fixture
def no_tf32():
    """fp32 means fp32 on the GPU: cuDNN's conv (the reference causal conv) defaults to TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
def test_cuda_graph_decode_equals_eager(demo_path, no_tf32):
    model = load_model(demo_path, device="cuda", dtype=torch.float32, progress=False)
    spread_weights(model, seed=1)
    prompts = prompts_of((3, 17, 64, 65, 100), 248000, seed=8)
    graphs = PagedModelRunner(model, 4, 160, page_size=16, max_graph_batch=4)
    eager = PagedModelRunner(model, 4, 160, page_size=16, cuda_graphs=False)
    assert graphs.graphs is not None and graphs.graphs.sizes == [1, 2, 4]
    # 5 prompts on 4 rows with different budgets: batches of 4, 3 (padded to 4), 2 and 1 replay.
    budgets = [24, 9, 30, 5, 17]
    assert greedy_generate(graphs, prompts, budgets, chunk_size=32) == greedy_generate(eager, prompts, budgets,
                                                                                      chunk_size=32)


@pytest.mark.gpu
def test_cuda_graph_logits_in_bf16(demo_path):
    model = load_model(demo_path, device="cuda", dtype=torch.bfloat16, progress=False)
    spread_weights(model, seed=1)
    prompts = prompts_of((5, 40, 64), 248000, seed=10)
    logits = []
    for use_graphs in (True, False):
        runner = PagedModelRunner(model, 4, 96, page_size=16, cuda_graphs=use_graphs)
        first = runner.prefill_batch([0, 1, 2], prompts).argmax(dim=-1).tolist()
        logits.append(runner.decode([0, 1, 2], first).float().clone())  # 3 rows: padded to 4 with graphs
    assert not logits[0].isnan().any()
    assert ((logits[0] - logits[1]).norm() / logits[1].norm()).item() < 1e-2


@pytest.mark.gpu
def test_triton_on_cuda_matches_the_reference_in_fp32(demo_path, no_tf32):
    model = load_model(demo_path, device="cuda", dtype=torch.float32, progress=False)
    spread_weights(model, seed=1)
    prompts = prompts_of(AWKWARD_LENGTHS, 248000, seed=9)
    runner = PagedModelRunner(model, 3, 200, page_size=16)
    assert runner.kernels.name == "triton" and not os.environ.get("TRITON_INTERPRET")
    ours = greedy_generate(runner, prompts, 32, chunk_size=48)
    assert ours == reference_tokens(model, prompts, [32] * len(prompts), chunk=48)
