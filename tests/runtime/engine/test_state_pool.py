"""Linear-attention state slots: allocation bookkeeping, and the model cache's layout and size."""
import pytest
import torch

from qwen35.planner import memory
from qwen35.runtime.demo import demo_config
from qwen35.runtime.engine.kv_pool import PoolExhausted
from qwen35.runtime.engine.state_pool import SlotAllocator
from qwen35.runtime.model.cache import ModelCache


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


def test_cache_layout_matches_the_kernels_and_the_planner():
    text = demo_config("tiny").text
    cache = ModelCache(text, num_slots=3, num_pages=5, page_size=16, dtype=torch.bfloat16, device="cpu",
                       mtp_layers=1)
    conv_dim = 2 * text.linear_num_key_heads * text.linear_key_head_dim + \
        text.linear_num_value_heads * text.linear_value_head_dim
    assert set(cache.conv) == set(text.linear_attention_layer_ids)
    for layer in text.linear_attention_layer_ids:
        assert cache.conv[layer].shape == (3, conv_dim, text.linear_conv_kernel_dim - 1)
        assert cache.conv[layer].dtype == torch.bfloat16
        assert cache.recurrent[layer].shape == (3, text.linear_num_value_heads, 128, 128)
        assert cache.recurrent[layer].dtype == torch.float32 and cache.recurrent[layer].is_contiguous()
    assert set(cache.key) == set(text.full_attention_layer_ids) | {text.num_hidden_layers}  # the MTP layer too
    assert cache.key[text.num_hidden_layers].shape == (6, 16, text.num_key_value_heads, text.head_dim)
    per_slot = memory.state_bytes_per_slot(text, 1, "fp32", "bf16").value
    per_token = memory.kv_bytes_per_token(text, 1, "bf16", 1).value
    assert cache.state_nbytes == 3 * per_slot
    assert cache.kv_nbytes == (5 + 1) * 16 * per_token  # the scratch page included
    assert cache.scratch_page == 5


def test_clear_zeroes_the_given_slots_only():
    text = demo_config("tiny").text
    cache = ModelCache(text, num_slots=3, num_pages=1, page_size=16, dtype=torch.float32, device="cpu")
    for store in (cache.conv, cache.recurrent):
        for tensor in store.values():
            tensor.fill_(1.0)
    cache.clear_slots(torch.tensor([0, 2]))
    for store in (cache.conv, cache.recurrent):
        for tensor in store.values():
            assert tensor[[0, 2]].abs().sum() == 0 and bool((tensor[1] == 1).all())
