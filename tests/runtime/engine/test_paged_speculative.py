"""MTP speculation over the paged pools: greedy output equals plain decoding, sampled output equals the
eager SpeculativeRunner's, a step leaves the pools as plain paged decoding of the accepted tokens does,
and the engine serves with it and gets every page and slot back.

The demo checkpoint with its matrices spread (spread_weights), then made to draft sometimes right: the
MTP head sees only the next token's embedding (fc keeps it, its layer writes nothing), and the token
embeddings are scaled up so the main model's next token leans on its input token without ignoring the
rest of the context (acceptance about 0.3, continuations not one repeated token). Partial acceptance
is what tests the rollback: rejected drafts leave KV in pages and would leave GDN state behind.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import torch

from qwen35.runtime.bench.agreement import greedy_generate, guessing_mtp_head, spread_weights
from qwen35.runtime.engine.async_engine import AsyncEngine, EngineConfig
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.paged_speculative import PagedSpeculativeRunner
from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.engine.sampling import SamplingBatch, SamplingParams, TokenHistory, sample
from qwen35.runtime.engine.speculative import SpeculativeRunner
from qwen35.runtime.kernels.paged_attention import gather_pages
from qwen35.runtime.model.loader import load_model

PAGE = 16
VOCAB = 248000
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def model(demo_path):
    loaded = load_model(demo_path, progress=False)
    spread_weights(loaded, seed=2)
    guessing_mtp_head(loaded)  # drafts right part of the time: partial acceptance
    return loaded


def prompts_of(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in lengths]


@torch.inference_mode()
def speculative_greedy(runner, prompts, budgets, chunk):
    """Greedy tokens per prompt with continuous batching: rows taken as they free up, prompts prefilled in
    packed chunks beside running rows, then speculate steps with every third step a plain decode (which
    must keep the MTP head fed). Returns (tokens, accepted / drafted)."""
    waiting, running = list(range(len(prompts))), {}  # running: row -> prompt index
    outputs = [[] for _ in prompts]
    steps = accepted = drafted = 0

    def retire_finished():
        for row, index in list(running.items()):
            if len(outputs[index]) >= budgets[index]:
                del outputs[index][budgets[index]:]
                runner.release_row(row)
                del running[row]

    while waiting or running:
        admitted = {}
        for row in range(runner.num_rows):
            if row not in running and waiting:
                admitted[row] = waiting.pop(0)
                runner.reset_row(row)
        offsets = dict.fromkeys(admitted, 0)
        while offsets:
            rows = list(offsets)
            pieces = [prompts[admitted[r]][offsets[r]:offsets[r] + chunk] for r in rows]
            logits = runner.prefill_batch(rows, pieces)
            for row, piece, row_logits in zip(rows, pieces, logits):
                offsets[row] += len(piece)
                if offsets[row] == len(prompts[admitted[row]]):
                    del offsets[row]
                    outputs[admitted[row]].append(int(row_logits.argmax()))
                    running[row] = admitted[row]
        retire_finished()
        rows = list(running)
        if not rows:
            continue
        last = [outputs[running[r]][-1] for r in rows]
        if steps % 3 == 2:
            for row, token in zip(rows, runner.decode(rows, last).argmax(dim=-1).tolist()):
                outputs[running[row]].append(token)
        else:
            batch = SamplingBatch.from_params([GREEDY] * len(rows), [len(outputs[running[r]]) for r in rows])
            step = runner.speculate(rows, last, batch)
            for row, tokens in zip(rows, step.token_ids):
                outputs[running[row]] += tokens
            accepted, drafted = accepted + sum(step.num_accepted), drafted + step.num_drafted
        steps += 1
        retire_finished()
    return outputs, accepted / drafted


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_speculation_equals_plain_greedy(model, k):
    """Six prompts on three rows (rows, slots and pages reused), lengths around page boundaries."""
    prompts = prompts_of((1, 15, 16, 17, 33, 47), seed=k)
    budgets = [12, 9, 14, 5, 11, 13]
    max_len = 47 + 14
    runner = PagedSpeculativeRunner(model, 3, max_len, k, page_size=PAGE)
    ours, acceptance = speculative_greedy(runner, prompts, budgets, chunk=16)
    reference = greedy_generate(TorchModelRunner(model, 3, max_len), prompts, budgets, chunk_size=16)
    assert ours == reference
    assert 0.1 < acceptance < 0.95, "both accepted and rejected drafts should be exercised"
    assert sum(len(set(tokens)) > 3 for tokens in ours) >= 4  # not a degenerate repeat
    assert runner.blocks.num_free_pages == runner.blocks.num_pages and runner.slots.num_free == 3
    assert runner.pending_count == [0, 0, 0] and runner.draft_cache.lengths == [0, 0, 0]


def run_sampled(runner, prompts, params, length, seed):
    """`length` sampled tokens per prompt, one row each: prefill, then speculate steps (with logprobs)."""
    rows = list(range(len(prompts)))
    history = TokenHistory(len(rows), runner.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    for row, prompt in zip(rows, prompts):
        runner.reset_row(row)
        history.start(row, prompt)
    logits = torch.stack([runner.prefill(row, prompt) for row, prompt in zip(rows, prompts)])
    slots = torch.tensor(rows)
    first = sample(logits, SamplingBatch.from_params(params, [0] * len(rows)), history, slots, generator).token_ids
    history.append(slots, first)
    outputs, accepted, logprobs = [[t] for t in first.tolist()], [], []
    while todo := [r for r in rows if len(outputs[r]) < length]:
        slots = torch.tensor(todo)
        batch = SamplingBatch.from_params([params[r] for r in todo], [len(outputs[r]) for r in todo])
        step = runner.speculate(todo, [outputs[r][-1] for r in todo], batch, history, slots, generator)
        for row, tokens in zip(todo, step.token_ids):
            outputs[row] += tokens
            history.append(torch.full((len(tokens),), row), torch.tensor(tokens))
        accepted.append(step.num_accepted)
        logprobs.append(step.logprobs)
    return outputs, accepted, logprobs


def test_sampled_speculation_equals_the_eager_runner(model):
    """Same seeds, same calls: the same drafts, acceptance decisions and tokens as SpeculativeRunner,
    for seeded rows (noise from seed and step) and unseeded ones (the shared generator)."""
    prompts = prompts_of((5, 18, 31, 2), seed=11)
    # No top-k/top-p: their full-vocabulary sort would dominate the runtime (the filters are shared code).
    params = [SamplingParams(temperature=0.5, seed=7, logprobs=2),
              SamplingParams(temperature=0.7, presence_penalty=0.5),
              SamplingParams(temperature=0.0, repetition_penalty=1.3, seed=3),
              SamplingParams(temperature=0.3)]
    with torch.inference_mode():
        eager = run_sampled(SpeculativeRunner(model, 4, 64, 3), prompts, params, length=12, seed=5)
        paged = run_sampled(PagedSpeculativeRunner(model, 4, 64, 3, page_size=PAGE), prompts, params,
                            length=12, seed=5)
    assert paged[0] == eager[0]
    assert paged[1] == eager[1]
    accepted = [n for step in paged[1] for n in step]
    assert 0 < sum(accepted) < 3 * len(accepted)
    with_logprobs = [(ours, theirs) for ours, theirs in zip(paged[2], eager[2]) if theirs is not None]
    assert with_logprobs and all(ours is not None for ours, _ in with_logprobs)
    for ours, theirs in with_logprobs:  # measured: within 1e-5 of each other
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def row_kv(runner, layer, row):
    """The row's cached keys and values of one attention layer, [length, kv_heads, head_dim] each."""
    table = torch.tensor([runner.blocks.tables[row]], dtype=torch.int32)
    length = runner.blocks.lengths[row]
    return (gather_pages(runner.kv.key[layer], table, length)[0], gather_pages(runner.kv.value[layer], table, length)[0])


def max_state_errors(ours, plain, rows):
    """Largest |difference| of conv state, recurrent state and K/V over the rows, relative to the largest value."""
    errors = {"conv": 0.0, "recurrent": 0.0, "kv": 0.0}
    for row in rows:
        slot_ours, slot_plain = ours.row_slot[row], plain.row_slot[row]
        for name, store_ours, store_plain in (("conv", ours.state.conv, plain.state.conv),
                                              ("recurrent", ours.state.recurrent, plain.state.recurrent)):
            for layer in store_ours:
                a, b = store_ours[layer][slot_ours], store_plain[layer][slot_plain]
                errors[name] = max(errors[name], ((a - b).abs().max() / b.abs().max()).item())
        for layer in ours.kv.key:
            for a, b in zip(row_kv(ours, layer, row), row_kv(plain, layer, row)):
                errors["kv"] = max(errors["kv"], ((a - b).abs().max() / b.abs().max()).item())
    return errors


def test_a_step_leaves_the_pools_as_plain_decoding_of_the_accepted_tokens(model):
    """After each speculate step: every row's slot state and K/V equal a plain paged runner's that decoded
    the kept tokens ([last token] + accepted drafts) one by one; lengths and pages held agree too."""
    prompts = prompts_of((14, 29, 45), seed=4)  # verifies cross page boundaries at different steps
    rows = [0, 1, 2]
    ours = PagedSpeculativeRunner(model, 3, 96, 3, page_size=PAGE)
    plain = PagedModelRunner(model, 3, 96, page_size=PAGE)
    partial = 0
    worst = {"conv": 0.0, "recurrent": 0.0, "kv": 0.0}
    with torch.inference_mode():
        last = ours.prefill_batch(rows, prompts).argmax(dim=-1).tolist()
        plain.prefill_batch(rows, prompts)
        for _ in range(8):
            step = ours.speculate(rows, last, SamplingBatch.from_params([GREEDY] * 3, [1] * 3))
            kept = [[token] + tokens[:-1] for token, tokens in zip(last, step.token_ids)]
            for j in range(max(map(len, kept))):
                todo = [row for row in rows if len(kept[row]) > j]
                plain.decode(todo, [kept[row][j] for row in todo])
            assert ours.blocks.lengths == plain.blocks.lengths
            assert [len(table) for table in ours.blocks.tables] == [len(table) for table in plain.blocks.tables]
            assert ours.blocks.num_pages - ours.blocks.num_free_pages == plain.blocks.num_pages - plain.blocks.num_free_pages
            errors = max_state_errors(ours, plain, rows)
            worst = {name: max(worst[name], value) for name, value in errors.items()}
            partial += sum(0 < n < 3 for n in step.num_accepted)
            last = [tokens[-1] for tokens in step.token_ids]
    assert partial > 0, "some step should accept only part of the drafts"
    # Measured about 1e-6: the batched verify projections against one-token decode matmuls.
    assert worst["conv"] < 1e-5 and worst["recurrent"] < 1e-5 and worst["kv"] < 1e-5, worst


async def _until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


def serve(runner, prompts, params, config):
    """Every prompt through one AsyncEngine; (tokens, logprobs per prompt, the stopped engine), once idle."""
    async def run():
        engine = AsyncEngine(runner, config=config)
        await engine.start()
        try:
            handles = [engine.submit(prompt, [p])[0] for prompt, p in zip(prompts, params)]
            results = []
            for handle in handles:
                outputs = [output async for output in handle]
                results.append(([t for o in outputs for t in o.token_ids],
                                [lp for o in outputs for lp in (o.logprobs or [])]))
            await _until(lambda: runner.slots.num_free == runner.num_rows)
            return results, engine
        finally:
            await engine.stop()

    results, engine = asyncio.run(run())
    return [r[0] for r in results], [r[1] for r in results], engine


def test_engine_with_speculation_equals_speculation_off_and_frees_the_pools(model):
    """Greedy through the AsyncEngine (chunked packed prefill, penalties, logprobs, more prompts than rows):
    the tokens of a plain paged engine; idle again, every page and slot is back."""
    prompts = prompts_of((3, 40, 17, 64, 9), seed=8)
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True, presence_penalty=pp, logprobs=lp)
              for m, pp, lp in ((9, 0.0, 2), (6, 1.5, None), (11, 0.0, None), (7, 0.0, 0), (10, 0.0, None))]
    config = EngineConfig(max_running_requests=3, max_model_len=96, prefill_chunk_size=16, max_prefill_tokens=24,
                          speculative_tokens=2)
    plain_tokens, plain_logprobs, _ = serve(PagedModelRunner(model, 3, 96, page_size=PAGE), prompts, params,
                                            EngineConfig(**{**config.__dict__, "speculative_tokens": 0}))
    runner = PagedSpeculativeRunner(model, 3, 96, 2, page_size=PAGE)
    tokens, logprobs, engine = serve(runner, prompts, params, config)
    assert tokens == plain_tokens
    assert 0 < engine.accepted_tokens < engine.draft_tokens
    for got, expected in zip(logprobs, plain_logprobs):
        assert [g.token_id for g in got] == [e.token_id for e in expected]
        assert [[t for t, _ in g.top] for g in got] == [[t for t, _ in e.top] for e in expected]
        torch.testing.assert_close([g.logprob for g in got], [e.logprob for e in expected], rtol=1e-4, atol=1e-4)
    assert runner.blocks.num_free_pages == runner.blocks.num_pages and runner.slots.num_free == 3
    assert runner.pending_count == [0, 0, 0]


def test_media_and_a_model_without_an_mtp_head_are_refused(model, demo_path):
    runner = PagedSpeculativeRunner(model, 1, 32, 2, page_size=PAGE)
    with pytest.raises(ValueError, match="text prompts only"):
        runner.prefill(0, [1, 2, 3], media={"positions": torch.zeros(3, 1, 3, dtype=torch.long)})
    bare = load_model(demo_path, progress=False)
    bare.mtp = None
    with pytest.raises(ValueError, match="MTP head"):
        PagedSpeculativeRunner(bare, 1, 32, 2)
