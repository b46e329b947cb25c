"""The KV page allocator: page arithmetic, exhaustion, free and reuse (no torch)."""
import pytest

from qwen35.runtime.engine.kv_pool import BlockManager, PoolExhausted, pages_for


def test_pages_for_rounds_up():
    assert [pages_for(n, 16) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]


def test_allocate_hands_out_whole_tables_in_order():
    blocks = BlockManager(num_pages=8, page_size=4)
    assert blocks.allocate(5) == [0, 1]  # 5 tokens: two pages
    assert blocks.allocate(3) == [2]
    assert blocks.allocate(8) == [3, 4]
    assert blocks.num_free_pages == 3
    with pytest.raises(PoolExhausted):
        blocks.allocate(13)  # four pages: one more than are free
    assert blocks.allocate(12) == [5, 6, 7]


def test_exhaustion_is_reported_and_takes_nothing():
    blocks = BlockManager(num_pages=3, page_size=16)
    blocks.allocate(40)  # three pages
    with pytest.raises(PoolExhausted, match="0 free pages"):
        blocks.allocate(1)
    assert blocks.num_free_pages == 0


def test_free_returns_pages_for_reuse_under_churn():
    blocks = BlockManager(num_pages=6, page_size=16)
    tables = [[], [], []]
    for round_ in range(50):  # allocate/free churn never leaks or double-hands a page
        row = round_ % 3
        blocks.free(tables[row])
        tables[row] = blocks.allocate(1 + (round_ * 7) % 32)
        held = [page for table in tables for page in table]
        assert len(held) == len(set(held))
        assert len(held) + blocks.num_free_pages == 6
    for table in tables:
        blocks.free(table)
    assert blocks.num_free_pages == 6


def test_the_first_freed_page_is_handed_out_first():
    blocks = BlockManager(num_pages=4, page_size=4)
    table = blocks.allocate(8)
    blocks.free(table)
    assert blocks.allocate(4) == table[:1]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        BlockManager(num_pages=0, page_size=16)
