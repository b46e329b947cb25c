"""The async engine: batched output equals offline generation, seeds, aborts, queue bound, failures."""
import asyncio
import threading
import time

import pytest
import torch

from qwen35.runtime.engine.async_engine import AsyncEngine, QueueFull
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampler import Sampler
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.engine.stand_in import LogitsRunner
from qwen35.runtime.llm import LLM


@pytest.fixture(scope="module")
def demo_llm(demo_path):
    return LLM(demo_path, progress=False)


class CountingRunner(LogitsRunner):
    """Logits that pick last token + 1; decode steps can be held at a gate, and the next step made to fail."""

    def __init__(self, num_slots=2, max_len=64, vocab_size=50):
        super().__init__(num_slots, max_len, vocab_size)
        self.gate = threading.Event()
        self.gate.set()
        self.in_flight = threading.Event()
        self.fail_next = False

    def logits(self, seqs):
        self.in_flight.set()
        try:
            if any(seq.output_ids for seq in seqs):  # a decode step (prompts pass the gate)
                assert self.gate.wait(timeout=30), "test left the gate closed"
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("boom")
            logits = torch.full((len(seqs), self.vocab_size), -1e4)
            logits[torch.arange(len(seqs)), torch.tensor([s.last_token + 1 for s in seqs]) % self.vocab_size] = 0.0
            return logits
        finally:
            self.in_flight.clear()


def engine_over(runner, tokenizer=None, **settings):
    """An AsyncEngine over a runner (not started)."""
    config = EngineConfig(**settings)
    return AsyncEngine(LLMEngine(runner, config, tokenizer, eos_token_ids=DEFAULT_STOP_TOKEN_IDS))


def model_engine(llm, slots, max_len, **settings):
    """An AsyncEngine over the demo model, pools for `slots` sequences of max_len."""
    config = EngineConfig(max_running_requests=slots, max_model_len=max_len, **settings)
    return AsyncEngine(LLMEngine(build_runner(llm.model, config)[0], config, llm.tokenizer,
                                 eos_token_ids=DEFAULT_STOP_TOKEN_IDS))


async def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.002)


async def _collect(engine, prompt, params):
    tokens, reasons = [], []
    async for output in engine.generate(prompt, params):
        tokens += output.token_ids
        reasons.append(output.finish_reason)
    return tokens, reasons[-1]


def test_batched_engine_matches_offline_generation(demo_llm):
    """Prompts of different lengths, chunked prefill and arrivals mid-decode give LLM.generate's tokens."""
    prompts = [demo_llm.encode(text) for text in
               ["Hello!", "What is the capital of France? " * 3, "Write a short poem about the sea.", "x = 1"]]
    max_tokens = [6, 3, 8, 5]
    want = demo_llm.generate(prompts, [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True)
                                       for m in max_tokens])

    async def main():
        engine = model_engine(demo_llm, 3, 128, prefill_chunk_size=5, max_prefill_tokens=7)
        await engine.start()
        try:
            jobs = []
            for prompt, m in zip(prompts, max_tokens):
                jobs.append(asyncio.create_task(_collect(engine, prompt, SamplingParams(temperature=0, max_tokens=m,
                                                                                       ignore_eos=True))))
                await asyncio.sleep(0)  # let arrivals interleave with running steps
            return await asyncio.gather(*jobs), engine.num_running
        finally:
            await engine.stop()

    results, running = asyncio.run(main())
    assert [tokens for tokens, _ in results] == [o.token_ids for o in want]
    assert [reason for _, reason in results] == ["length"] * 4
    assert running == 0


def test_seeded_sampling_does_not_depend_on_the_batch(demo_llm):
    prompt = demo_llm.encode("Tell me about the weather in Oslo")
    seeded = SamplingParams(temperature=1.0, top_k=50, seed=1234, max_tokens=6, ignore_eos=True)

    async def main():
        engine = model_engine(demo_llm, 4, 64)
        await engine.start()
        try:
            alone = await _collect(engine, prompt, seeded)
            others = [SamplingParams(temperature=1.0, max_tokens=6, ignore_eos=True) for _ in range(3)]
            together = await asyncio.gather(_collect(engine, prompt, seeded),
                                            *[_collect(engine, demo_llm.encode("Hi"), p) for p in others])
            return alone, together[0]
        finally:
            await engine.stop()

    alone, together = asyncio.run(main())
    assert alone == together


def test_seeded_sampling_matches_offline_generation_step_for_step(demo_llm):
    """The engine keeps its sampling tensors across steady steps: the seeded noise counter must still move."""
    prompts = [demo_llm.encode("Tell me about the weather in Oslo"), demo_llm.encode("Hi")]
    params = [SamplingParams(temperature=1.0, seed=99 + i, max_tokens=12, ignore_eos=True) for i in range(2)]
    want = [o.token_ids for o in demo_llm.generate(prompts, params)]

    async def main():
        engine = model_engine(demo_llm, 2, 64)
        await engine.start()
        try:
            return await asyncio.gather(*[_collect(engine, p, sp) for p, sp in zip(prompts, params)])
        finally:
            await engine.stop()

    got = [tokens for tokens, _ in asyncio.run(main())]
    assert got == want and len(set(want[0])) > 1


def test_sampling_tensors_are_reused_only_while_the_batch_steps_in_lockstep():
    sampler = Sampler(num_slots=3, vocab_size=50, device=torch.device("cpu"), seed=0)
    params = SamplingParams(temperature=1.0, seed=5)
    seqs = [Sequence(i, [1, 2], params, slot=i) for i in range(3)]
    first, _ = sampler.batch_for(seqs[:2])
    assert first.steps.tolist() == [0, 0]
    for s in seqs[:2]:
        s.output_ids.append(7)
    again, _ = sampler.batch_for(seqs[:2])
    assert again is first and again.steps.tolist() == [1, 1]
    seqs[0].output_ids += [7, 7]  # a speculative step: one sequence moved by more than one token
    seqs[1].output_ids.append(7)
    jumped, _ = sampler.batch_for(seqs[:2])
    assert jumped is not first and jumped.steps.tolist() == [3, 2]
    seqs[0].output_ids.append(7)
    seqs[1].output_ids.append(7)
    changed, slots = sampler.batch_for([seqs[0], seqs[2]])
    assert changed is not jumped and changed.steps.tolist() == [4, 0] and slots.tolist() == [0, 2]


def test_outputs_of_a_step_are_dropped_once_an_abort_ended_the_stream():
    from qwen35.runtime.engine.outputs import GenerationOutput

    engine = engine_over(CountingRunner(num_slots=1), max_running_requests=1, max_model_len=64)

    async def main():
        from qwen35.runtime.engine.async_engine import RequestHandle

        handle = RequestHandle(engine, Sequence(0, [1, 2], SamplingParams(max_tokens=8), slot=0))
        handle._put(GenerationOutput([], "", 2, 0, finish_reason="abort"))  # the abort got in first
        engine._deliver([(handle, GenerationOutput([4], "", 2, 1))], time.monotonic())
        return [output async for output in handle]

    outputs = asyncio.run(main())
    assert [o.finish_reason for o in outputs] == ["abort"]


def test_a_dying_engine_thread_ends_every_stream_and_refuses_new_work():
    runner = CountingRunner(num_slots=2)

    async def main():
        engine = engine_over(runner, max_running_requests=2, max_model_len=64)
        await engine.start()
        runner.gate.clear()  # hold the first decode so the sequence is live when the thread dies
        (handle,) = engine.submit([1, 2, 3], [SamplingParams(temperature=0, max_tokens=20)])
        first = await handle.__anext__()

        def broken_schedule():
            raise RuntimeError("scheduler bug")

        engine.engine.scheduler.schedule = broken_schedule
        runner.gate.set()
        rest = [output async for output in handle]
        await _until(lambda: not engine.is_running)
        with pytest.raises(RuntimeError, match="not running"):
            engine.submit([1], [SamplingParams(max_tokens=1)])
        await engine.stop()
        return first, rest

    first, rest = asyncio.run(main())
    assert first.token_ids == [4]
    assert rest[-1].finish_reason == "error" and "scheduler bug" in rest[-1].error


def test_abort_frees_the_row_for_the_next_sequence():
    runner = CountingRunner(num_slots=1)

    async def main():
        engine = engine_over(runner, max_running_requests=1, max_queue=1, max_model_len=64)
        await engine.start()
        try:
            runner.gate.clear()  # the prompt's token comes through, then the first decode step is held
            (first,) = engine.submit([1, 2, 3], [SamplingParams(temperature=0, max_tokens=50)])
            (second,) = engine.submit([10], [SamplingParams(temperature=0, max_tokens=3)])
            with pytest.raises(QueueFull):
                engine.submit([20], [SamplingParams(temperature=0, max_tokens=3)])
            output = await first.__anext__()
            assert output.token_ids == [4]
            assert engine.num_running == 1 and engine.num_waiting == 1
            await _until(runner.in_flight.is_set)
            first.abort()  # arrives while a step is in flight: takes effect when it returns
            runner.gate.set()
            outputs = [o async for o in first]
            assert outputs[-1].finish_reason == "abort"
            tokens = [t async for o in second for t in o.token_ids]
            return tokens, engine.num_running, engine.num_waiting
        finally:
            await engine.stop()

    tokens, running, waiting = asyncio.run(main())
    assert tokens == [11, 12, 13] and running == 0 and waiting == 0


def test_stop_token_ids_end_a_sequence_and_a_failed_step_fails_only_its_sequences():
    runner = CountingRunner(num_slots=2)

    async def main():
        engine = engine_over(runner, max_running_requests=2, max_model_len=64)
        await engine.start()
        try:
            stopped = await _collect(engine, [1], SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[5]))
            runner.fail_next = True
            failed = [o async for o in engine.generate([1], SamplingParams(temperature=0, max_tokens=20))]
            recovered = await _collect(engine, [30], SamplingParams(temperature=0, max_tokens=2))
            return stopped, failed[-1], recovered, engine.is_running
        finally:
            await engine.stop()

    stopped, failed, recovered, alive = asyncio.run(main())
    assert stopped == ([2, 3, 4, 5], "stop")
    assert failed.finish_reason == "error" and "boom" in failed.error
    assert recovered == ([31, 32], "length") and alive


def test_submit_validates_parameters_and_context():
    runner = CountingRunner(num_slots=1, max_len=16)

    async def main():
        engine = engine_over(runner, max_running_requests=1, max_model_len=16)
        await engine.start()
        try:
            with pytest.raises(ValueError, match="temperature"):
                engine.submit([1], [SamplingParams(temperature=5.0)])
            with pytest.raises(ValueError, match="context"):
                engine.submit([1] * 10, [SamplingParams(max_tokens=10)])
            assert engine.num_waiting == 0
        finally:
            await engine.stop()

    asyncio.run(main())
