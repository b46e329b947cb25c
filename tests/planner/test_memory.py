"""The memory arithmetic against hand-computed figures for real Qwen3.5 shapes."""
from qwen35.planner import memory
from qwen35.planner.models.registry import registry_config

GIB = 1 << 30


def test_kv_bytes_per_token_counts_only_full_attention_layers_and_replicates_kv_heads():
    text = registry_config("Qwen3.5-397B-A17B").text
    # 60 layers, every 4th full attention: 15 layers; 2 KV heads of 256 dims in bf16.
    assert memory.kv_bytes_per_token(text, tp=1).value == 2 * 2 * 256 * 2 * 15
    assert memory.kv_bytes_per_token(text, tp=2).value == 2 * 1 * 256 * 2 * 15
    # Beyond 2 ranks each rank still holds one whole KV head.
    assert memory.kv_bytes_per_token(text, tp=8).value == 2 * 1 * 256 * 2 * 15
    assert memory.kv_bytes_per_token(text, tp=8, extra_layers=1).value == 2 * 256 * 2 * 16


def test_state_bytes_per_slot_matches_the_guide_formula():
    text = registry_config("Qwen3.5-397B-A17B").text
    tp = 8
    conv = (2 * 16 * 128 + 64 * 128) // tp * 3 * 2
    recurrent = (64 // tp) * 128 * 128 * 4
    assert memory.state_bytes_per_slot(text, tp).value == (conv + recurrent) * 45
    assert memory.state_bytes_per_slot(text, tp, ssm_dtype="bf16").value == (conv + recurrent // 2) * 45


def test_slot_pools_keep_room_for_one_full_context():
    rest, state, kv = 10 * GIB, 100 * (1 << 20), 32768
    slots, tokens = memory.slot_pools(rest, state, kv, wanted_slots=256, context_length=262144)
    assert tokens.value >= 262144
    assert slots.value == int((rest - 262144 * kv) // state)
    few, _ = memory.slot_pools(rest, state, kv, wanted_slots=4, context_length=262144)
    assert few.value == 4
