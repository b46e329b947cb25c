"""The continuous-batching scheduler: admission, chunked prefill budget, rows, queue bound."""
import pytest

from qwen35.runtime.engine.scheduler import QueueFull, Scheduler, SchedulerConfig, Sequence, Status


def _seq(seq_id, prompt_len, max_tokens=4):
    return Sequence(seq_id, list(range(1, prompt_len + 1)), max_tokens)


def _finish_step(plan):
    """What the engine does after a step: every sampled sequence gets a token."""
    for seq in plan.sampled:
        seq.output_ids.append(7)


def test_admits_up_to_the_row_count_and_decodes_everyone_each_step():
    scheduler = Scheduler(SchedulerConfig(max_running=2, max_waiting=4, prefill_chunk_size=8, max_prefill_tokens=64))
    a, b, c = _seq(0, 5), _seq(1, 3), _seq(2, 4)
    scheduler.add([a, b, c])
    plan = scheduler.schedule()
    assert [(ch.seq.seq_id, ch.start, ch.end) for ch in plan.prefills] == [(0, 0, 5), (1, 0, 3)]
    assert plan.decodes == [] and plan.sampled == [a, b]
    assert (a.row, b.row, c.row) == (0, 1, None) and c.status is Status.WAITING
    _finish_step(plan)
    plan = scheduler.schedule()
    assert plan.prefills == [] and plan.decodes == [a, b]
    scheduler.finish(a)
    assert a.status is Status.FINISHED and scheduler.num_running == 1
    plan = scheduler.schedule()
    assert c.row == 0, "the freed row goes to the next waiting sequence"
    assert [ch.seq for ch in plan.prefills] == [c] and plan.decodes == [b]
    assert plan.sampled == [c, b], "completed prefills come before decodes, matching the logits order"


def test_long_prompts_are_chunked_within_the_step_budget():
    scheduler = Scheduler(SchedulerConfig(max_running=3, prefill_chunk_size=4, max_prefill_tokens=6))
    long, short = _seq(0, 10), _seq(1, 3)
    scheduler.add([long, short])
    chunks = []
    for _ in range(4):
        plan = scheduler.schedule()
        chunks.append([(ch.seq.seq_id, ch.start, ch.end, ch.completes_prompt) for ch in plan.prefills])
        assert sum(ch.end - ch.start for ch in plan.prefills) <= 6
        _finish_step(plan)
    assert chunks == [
        [(0, 0, 4, False), (1, 0, 2, False)],
        [(0, 4, 8, False), (1, 2, 3, True)],
        [(0, 8, 10, True)],
        [],
    ]
    assert long.status is Status.DECODING and short.status is Status.DECODING


def test_queue_bound_counts_free_rows_and_is_all_or_nothing():
    scheduler = Scheduler(SchedulerConfig(max_running=1, max_waiting=1))
    scheduler.add([_seq(0, 2)])  # takes the free row at the next step
    scheduler.add([_seq(1, 2)])  # waits
    with pytest.raises(QueueFull):
        scheduler.add([_seq(2, 2)])
    with pytest.raises(QueueFull):
        scheduler.add([_seq(3, 2), _seq(4, 2)])
    assert scheduler.num_waiting == 2
    scheduler.schedule()
    assert scheduler.num_running == 1 and scheduler.num_waiting == 1


def test_finishing_a_waiting_sequence_removes_it_from_the_queue():
    scheduler = Scheduler(SchedulerConfig(max_running=1, max_waiting=2))
    first, second = _seq(0, 2), _seq(1, 2)
    scheduler.add([first, second])
    scheduler.schedule()
    scheduler.finish(second)
    scheduler.finish(second)  # idempotent
    assert scheduler.num_waiting == 0 and second.status is Status.FINISHED
    scheduler.finish(first)
    assert not scheduler.has_work


def test_sequences_that_cannot_fit_the_context_are_refused():
    scheduler = Scheduler(SchedulerConfig(max_model_len=16))
    with pytest.raises(ValueError, match="exceeds the context"):
        scheduler.add([_seq(0, 10, max_tokens=7)])
    with pytest.raises(ValueError, match="empty"):
        scheduler.add([Sequence(1, [], 4)])
    scheduler.add([_seq(2, 10, max_tokens=6)])


def test_last_token_feeds_the_prompt_end_then_the_output():
    seq = _seq(0, 3)
    assert seq.last_token == 3
    seq.output_ids.append(9)
    assert seq.last_token == 9


def test_config_validation_names_the_bad_limit():
    with pytest.raises(ValueError, match="max_running"):
        Scheduler(SchedulerConfig(max_running=0))
    with pytest.raises(ValueError, match="max_waiting"):
        Scheduler(SchedulerConfig(max_waiting=-1))


def test_admission_reserves_kv_pages_and_finishing_returns_them():
    # 10 pages of 4 tokens; each sequence reserves pages for prompt + max_tokens.
    config = SchedulerConfig(max_running=4, prefill_chunk_size=64, max_prefill_tokens=256, kv_pages=10, page_size=4)
    scheduler = Scheduler(config)
    a, b, c = _seq(0, 9, max_tokens=7), _seq(1, 12, max_tokens=4), _seq(2, 1, max_tokens=1)
    scheduler.add([a, b, c])
    plan = scheduler.schedule()
    # a needs 4 pages, b 4: both fit (2 left); c needs 1 but waits behind nobody, so it is admitted too.
    assert [ch.seq for ch in plan.prefills] == [a, b, c] and scheduler.free_pages == 1
    d = _seq(3, 5, max_tokens=3)  # 2 pages: a row is free, the pages are not
    scheduler.add([d])
    _finish_step(plan)
    plan = scheduler.schedule()
    assert d.status is Status.WAITING and d.row is None and plan.decodes == [a, b, c]
    scheduler.finish(c)
    assert scheduler.free_pages == 2
    plan = scheduler.schedule()
    assert d.row is not None and [ch.seq for ch in plan.prefills] == [d] and scheduler.free_pages == 0
    for seq in (a, b, d):
        scheduler.finish(seq)
    assert scheduler.free_pages == 10


def test_admission_is_first_come_first_served_when_pages_are_short():
    config = SchedulerConfig(max_running=4, kv_pages=4, page_size=4, prefill_chunk_size=64, max_prefill_tokens=256)
    scheduler = Scheduler(config)
    big, small = _seq(0, 12, max_tokens=4), _seq(1, 2, max_tokens=2)
    holder = _seq(2, 2, max_tokens=2)
    scheduler.add([holder])
    scheduler.schedule()
    scheduler.add([big, small])
    scheduler.schedule()
    # big needs all 4 pages and holder has one: small must not overtake big and starve it.
    assert big.row is None and small.row is None
    scheduler.finish(holder)
    scheduler.schedule()
    assert big.row is not None and small.row is None


def test_a_request_larger_than_the_kv_pool_is_refused_at_once():
    scheduler = Scheduler(SchedulerConfig(max_running=2, max_model_len=100, kv_pages=5, page_size=4))
    with pytest.raises(ValueError, match="exceeds the KV pool of 20 tokens"):
        scheduler.add([_seq(0, 15, max_tokens=6)])
    scheduler.add([_seq(1, 15, max_tokens=5)])  # exactly 20 tokens: fits
    with pytest.raises(ValueError, match="positive sizes"):
        Scheduler(SchedulerConfig(kv_pages=0))


def test_speculation_reserves_room_for_a_verify_beyond_max_tokens():
    config = SchedulerConfig(max_running=2, kv_pages=4, page_size=4, reserve_extra_tokens=3,
                             prefill_chunk_size=64, max_prefill_tokens=64)
    scheduler = Scheduler(config)
    seq = _seq(0, 8, max_tokens=5)  # 13 tokens + 3 of a verify = 16: all four pages
    scheduler.add([seq])
    scheduler.schedule()
    assert scheduler.free_pages == 0
    with pytest.raises(ValueError, match="KV pool of 16 tokens"):
        scheduler.add([_seq(1, 8, max_tokens=6)])
