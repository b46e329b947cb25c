"""Linear-attention state slots: allocation/free bookkeeping and the torch pool's layout and size."""
import pytest
import torch

from qwen35.planner import memory
from qwen35.runtime.demo import demo_config
from qwen35.runtime.engine.kv_pool import PoolExhausted
from qwen35.runtime.engine.state_pool import SlotAllocator, StatePool


def test_slots_are_handed_out_lowest_first_and_reused():
    slots = SlotAllocator(3)
    assert [slots.allocate() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(PoolExhausted, match="all 3"):
        slots.allocate()
    slots.free(1)
    assert slots.num_free == 1
    assert slots.allocate() == 1


def test_freeing_a_slot_twice_is_an_error():
    slots = SlotAllocator(2)
    slot = slots.allocate()
    slots.free(slot)
    with pytest.raises(ValueError, match="not allocated"):
        slots.free(slot)


def test_pool_layout_matches_the_kernels_and_the_planner():
    text = demo_config("tiny").text
    pool = StatePool(text, num_slots=3, dtype=torch.bfloat16, device=torch.device("cpu"))
    conv_dim = 2 * text.linear_num_key_heads * text.linear_key_head_dim + \
        text.linear_num_value_heads * text.linear_value_head_dim
    assert set(pool.conv) == set(text.linear_attention_layer_ids)
    for layer in text.linear_attention_layer_ids:
        assert pool.conv[layer].shape == (3, conv_dim, text.linear_conv_kernel_dim - 1)
        assert pool.conv[layer].dtype == torch.bfloat16
        assert pool.recurrent[layer].shape == (3, text.linear_num_value_heads, 128, 128)
        assert pool.recurrent[layer].dtype == torch.float32 and pool.recurrent[layer].is_contiguous()
    per_slot = memory.state_bytes_per_slot(text, 1, "fp32", "bf16").value
    assert pool.nbytes == 3 * per_slot


def test_clear_zeroes_one_slot_only():
    text = demo_config("tiny").text
    pool = StatePool(text, num_slots=2, dtype=torch.float32, device=torch.device("cpu"))
    for store in (pool.conv, pool.recurrent):
        for tensor in store.values():
            tensor.fill_(1.0)
    pool.clear(1)
    for store in (pool.conv, pool.recurrent):
        for tensor in store.values():
            assert tensor[1].abs().sum() == 0 and bool((tensor[0] == 1).all())
