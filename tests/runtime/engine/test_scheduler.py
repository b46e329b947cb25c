"""The scheduler, owner of the books: admission (slots and pages), chunked prefill budget, queue bound,
post-step work (append, finish, free)."""
import subprocess
import sys

import pytest

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.scheduler import QueueFull, Scheduler, StepOutput
from qwen35.runtime.engine.sequence import Sequence, Status


def _seq(seq_id, prompt_len, max_tokens=4, stop_ids=frozenset()):
    """A sequence whose prompt shares no prefix with another seq_id's (so no prefix cache hits)."""
    prompt = list(range(1000 * seq_id + 1, 1000 * seq_id + prompt_len + 1))
    return Sequence(seq_id, prompt, SamplingParams(max_tokens=max_tokens), stop_ids)


def _scheduler(slots=2, pages=64, **settings):
    """A scheduler without prefix caching (test_prefix_cache.py covers it), unless settings turn it on."""
    return Scheduler(EngineConfig(**{"max_running_requests": slots, "prefix_caching": False, **settings}), slots, pages)


def _finish_step(scheduler, batch, token=7):
    """What the engine does after a step: every sampled sequence gets a token."""
    return scheduler.postprocess(batch, StepOutput([[token]] * len(batch.sampled), [[None]] * len(batch.sampled)))


def test_admits_up_to_the_slot_count_and_decodes_everyone_each_step():
    scheduler = _scheduler(slots=2, max_queue=4, prefill_chunk_size=8, max_prefill_tokens=64)
    a, b, c = _seq(0, 5), _seq(1, 3), _seq(2, 4)
    scheduler.add([a, b, c])
    batch = scheduler.schedule()
    assert [(ch.seq.seq_id, ch.start, ch.end) for ch in batch.prefills] == [(0, 0, 5), (1, 0, 3)]
    assert batch.decodes == [] and batch.sampled == [a, b] and batch.admitted == [a, b]
    assert (a.slot, b.slot, c.slot) == (0, 1, None) and c.status is Status.WAITING
    _finish_step(scheduler, batch)
    batch = scheduler.schedule()
    assert batch.prefills == [] and batch.decodes == [a, b] and batch.admitted == []
    scheduler.finish(a)
    assert a.status is Status.FINISHED and scheduler.num_running == 1
    batch = scheduler.schedule()
    assert c.slot == 0, "the freed slot goes to the next waiting sequence"
    assert [ch.seq for ch in batch.prefills] == [c] and batch.decodes == [b]
    assert batch.sampled == [c, b], "completed prefills come before decodes, matching the runner's order"


def test_long_prompts_are_chunked_within_the_step_budget():
    scheduler = _scheduler(slots=3, prefill_chunk_size=4, max_prefill_tokens=6)
    long, short = _seq(0, 10), _seq(1, 3)
    scheduler.add([long, short])
    chunks = []
    for _ in range(4):
        batch = scheduler.schedule()
        chunks.append([(ch.seq.seq_id, ch.start, ch.end, ch.completes_prompt) for ch in batch.prefills])
        assert sum(ch.end - ch.start for ch in batch.prefills) <= 6
        _finish_step(scheduler, batch)
    assert chunks == [
        [(0, 0, 4, False), (1, 0, 2, False)],
        [(0, 4, 8, False), (1, 2, 3, True)],
        [(0, 8, 10, True)],
        [],
    ]
    assert long.status is Status.DECODING and short.status is Status.DECODING


def test_queue_bound_counts_free_slots_and_is_all_or_nothing():
    scheduler = _scheduler(slots=1, max_queue=1)
    scheduler.add([_seq(0, 2)])  # takes the free slot at the next step
    scheduler.add([_seq(1, 2)])  # waits
    with pytest.raises(QueueFull):
        scheduler.add([_seq(2, 2)])
    with pytest.raises(QueueFull):
        scheduler.add([_seq(3, 2), _seq(4, 2)])
    assert scheduler.num_waiting == 2
    scheduler.schedule()
    assert scheduler.num_running == 1 and scheduler.num_waiting == 1


def test_finishing_a_waiting_sequence_removes_it_from_the_queue():
    scheduler = _scheduler(slots=1, max_queue=2)
    first, second = _seq(0, 2), _seq(1, 2)
    scheduler.add([first, second])
    scheduler.schedule()
    scheduler.finish(second)
    scheduler.finish(second)  # idempotent
    assert scheduler.num_waiting == 0 and second.status is Status.FINISHED
    scheduler.finish(first)
    assert not scheduler.has_work and scheduler.slots.num_free == 1 and scheduler.num_available_pages == 64


def test_sequences_that_cannot_fit_the_context_are_refused():
    scheduler = _scheduler(max_model_len=16)
    with pytest.raises(ValueError, match="exceeds the context"):
        scheduler.add([_seq(0, 10, max_tokens=7)])
    with pytest.raises(ValueError, match="empty"):
        scheduler.add([_seq(1, 0)])
    scheduler.add([_seq(2, 10, max_tokens=6)])


def test_last_token_and_length_follow_the_prompt_then_the_output():
    seq = _seq(0, 3)
    assert seq.last_token == 3 and seq.num_tokens == 3
    seq.append_token(9, None)
    assert seq.last_token == 9 and seq.num_tokens == 4


def test_config_validation_names_the_bad_limit():
    with pytest.raises(ValueError, match="max_running_requests"):
        Scheduler(EngineConfig(max_running_requests=0), 1, 1)
    with pytest.raises(ValueError, match="max_queue"):
        Scheduler(EngineConfig(max_queue=-1), 1, 1)


def test_admission_allocates_every_page_a_sequence_can_fill_and_finishing_returns_them():
    # 10 pages of 4 tokens; each sequence holds pages for prompt + max_tokens from admission on.
    scheduler = _scheduler(slots=4, pages=10, page_size=4, prefill_chunk_size=64, max_prefill_tokens=256)
    a, b, c = _seq(0, 9, max_tokens=7), _seq(1, 12, max_tokens=4), _seq(2, 1, max_tokens=3)
    scheduler.add([a, b, c])
    batch = scheduler.schedule()
    # a needs 4 pages, b 4, c 1: all fit, one page stays free.
    assert [ch.seq for ch in batch.prefills] == [a, b, c] and scheduler.num_available_pages == 1
    assert (len(a.block_table), len(b.block_table), len(c.block_table)) == (4, 4, 1)
    held = a.block_table + b.block_table + c.block_table
    assert len(set(held)) == 9, "no page is handed out twice"
    d = _seq(3, 5, max_tokens=3)  # 2 pages: a slot is free, the pages are not
    scheduler.add([d])
    _finish_step(scheduler, batch)
    batch = scheduler.schedule()
    assert d.status is Status.WAITING and d.slot is None and batch.decodes == [a, b, c]
    scheduler.finish(c)
    assert scheduler.num_available_pages == 2 and c.block_table == []
    batch = scheduler.schedule()
    assert d.slot is not None and [ch.seq for ch in batch.prefills] == [d] and scheduler.num_available_pages == 0
    for seq in (a, b, d):
        scheduler.finish(seq)
    assert scheduler.num_available_pages == 10 and scheduler.slots.num_free == 4


def test_admission_is_first_come_first_served_when_pages_are_short():
    scheduler = _scheduler(slots=4, pages=4, page_size=4, prefill_chunk_size=64, max_prefill_tokens=256)
    big, small = _seq(0, 12, max_tokens=4), _seq(1, 2, max_tokens=2)
    holder = _seq(2, 2, max_tokens=2)
    scheduler.add([holder])
    scheduler.schedule()
    scheduler.add([big, small])
    scheduler.schedule()
    # big needs all 4 pages and holder has one: small must not overtake big and starve it.
    assert big.slot is None and small.slot is None
    scheduler.finish(holder)
    scheduler.schedule()
    assert big.slot is not None and small.slot is None


def test_a_request_larger_than_the_kv_pool_is_refused_at_once():
    scheduler = _scheduler(slots=2, pages=5, max_model_len=100, page_size=4)
    with pytest.raises(ValueError, match="exceeds the KV pool of 20 tokens"):
        scheduler.add([_seq(0, 15, max_tokens=6)])
    scheduler.add([_seq(1, 15, max_tokens=5)])  # exactly 20 tokens: fits
    with pytest.raises(ValueError, match="positive sizes"):
        _scheduler(pages=0)


def test_speculation_reserves_room_for_a_verify_beyond_max_tokens():
    scheduler = _scheduler(slots=2, pages=4, page_size=4, speculative_tokens=2, prefill_chunk_size=64,
                           max_prefill_tokens=64)
    seq = _seq(0, 8, max_tokens=5)  # 13 tokens + 3 of a verify (last token and 2 drafts) = 16: all four pages
    scheduler.add([seq])
    scheduler.schedule()
    assert scheduler.num_available_pages == 0
    with pytest.raises(ValueError, match="KV pool of 16 tokens"):
        scheduler.add([_seq(1, 8, max_tokens=6)])


def test_postprocess_appends_up_to_the_end_and_frees_in_one_place():
    scheduler = _scheduler(slots=2, pages=8, page_size=4)
    stopper, runner = _seq(0, 3, max_tokens=10, stop_ids=frozenset({5})), _seq(1, 3, max_tokens=2)
    scheduler.add([stopper, runner])
    batch = scheduler.schedule()
    outputs = scheduler.postprocess(batch, StepOutput([[4, 5, 6], [8, 9, 10]], [[None] * 3] * 2))
    # The stop token ends the first, max_tokens the second; tokens after the end are dropped.
    assert [(seq.seq_id, out.token_ids, out.finish_reason) for seq, out in outputs] == [
        (0, [4], None), (0, [5], "stop"), (1, [8], None), (1, [9], "length")]
    assert stopper.output_ids == [4, 5] and runner.output_ids == [8, 9]
    assert not scheduler.has_work and scheduler.slots.num_free == 2 and scheduler.num_available_pages == 8


def test_a_sequence_aborted_in_flight_is_retired_by_postprocess_with_an_abort():
    scheduler = _scheduler(slots=1, pages=8)
    seq = _seq(0, 3)
    scheduler.add([seq])
    batch = scheduler.schedule()
    seq.aborted = True
    outputs = _finish_step(scheduler, batch)
    assert [(out.token_ids, out.finish_reason) for _, out in outputs] == [([], "abort")]
    assert seq.output_ids == [] and seq.status is Status.FINISHED and scheduler.slots.num_free == 1


def test_the_books_import_without_torch():
    code = ("import sys; import qwen35.runtime.engine.scheduler, qwen35.runtime.engine.kv_pool, "
            "qwen35.runtime.engine.state_pool, qwen35.runtime.engine.sequence, qwen35.runtime.engine.config; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
