"""The paged KV block manager: page arithmetic, growth, exhaustion, free and reuse (no torch)."""
import subprocess
import sys

import pytest

from qwen35.runtime.engine.kv_pool import BlockManager, PoolExhausted, pages_for


def test_pages_for_rounds_up():
    assert [pages_for(n, 16) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]


def test_grow_hands_out_pages_in_order_and_maps_slots():
    blocks = BlockManager(num_pages=8, page_size=4, num_rows=2, max_len=32)
    assert blocks.grow(0, 5) == [(0, 0), (1, 1)]  # 5 tokens: two pages
    assert blocks.grow(1, 3) == [(0, 2)]
    assert blocks.grow(0, 3) == []  # 8 tokens still fit two pages
    assert blocks.grow(0, 1) == [(2, 3)]
    assert blocks.tables == [[0, 1, 3], [2]]
    assert blocks.lengths == [9, 3]
    # token 5 of row 0: page 1, offset 1; token 8: page 3, offset 0
    assert blocks.slot(0, 5) == 1 * 4 + 1
    assert blocks.slots(0, 3, 9) == [3, 4, 5, 6, 7, 12]
    assert blocks.num_free_pages == 4
    assert blocks.scratch_page == 8


def test_exhaustion_is_reported_and_leaves_the_row_unchanged():
    blocks = BlockManager(num_pages=3, page_size=16, num_rows=2, max_len=64)
    blocks.grow(0, 40)  # three pages
    assert not blocks.can_grow(1, 1)
    with pytest.raises(PoolExhausted, match="0 free pages"):
        blocks.grow(1, 1)
    assert blocks.tables[1] == [] and blocks.lengths[1] == 0
    assert blocks.can_grow(0, 8) and not blocks.can_grow(0, 9)


def test_rows_cannot_pass_max_len():
    blocks = BlockManager(num_pages=10, page_size=16, num_rows=1, max_len=20)
    blocks.grow(0, 20)
    with pytest.raises(ValueError, match="at most 20"):
        blocks.grow(0, 1)


def test_free_returns_pages_for_reuse_under_churn():
    blocks = BlockManager(num_pages=6, page_size=16, num_rows=3, max_len=64)
    for round_ in range(50):  # allocate/free churn never leaks or double-hands a page
        row = round_ % 3
        blocks.free(row)
        blocks.grow(row, 1 + (round_ * 7) % 32)
        held = [page for table in blocks.tables for page in table]
        assert len(held) == len(set(held))
        assert len(held) + blocks.num_free_pages == 6
    for row in range(3):
        blocks.free(row)
    assert blocks.num_free_pages == 6 and blocks.lengths == [0, 0, 0]


def test_truncate_rolls_a_row_back_and_returns_the_pages_past_it():
    blocks = BlockManager(num_pages=6, page_size=4, num_rows=2, max_len=32)
    blocks.grow(0, 5)
    blocks.grow(1, 2)
    blocks.grow(0, 6)  # 11 tokens: pages 0, 1, 3
    blocks.truncate(0, 9)  # still three pages
    assert blocks.tables[0] == [0, 1, 3] and blocks.lengths[0] == 9 and blocks.num_free_pages == 2
    blocks.truncate(0, 8)  # page 3 goes back and is handed out next
    assert blocks.tables[0] == [0, 1] and blocks.lengths[0] == 8 and blocks.num_free_pages == 3
    assert blocks.grow(1, 3) == [(1, 3)]
    blocks.truncate(0, 0)
    assert blocks.tables[0] == [] and blocks.num_free_pages == 4
    with pytest.raises(ValueError, match="cannot keep 6"):
        blocks.truncate(1, 6)
    assert blocks.lengths[1] == 5


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        BlockManager(num_pages=0, page_size=16, num_rows=1, max_len=16)


def test_block_and_slot_managers_import_without_torch():
    code = ("import sys; import qwen35.runtime.engine.kv_pool, qwen35.runtime.engine.state_pool; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
