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


def test_sglang_mem_fraction_for_h100_and_h200():
    h100 = 81559 << 20
    # reserved = 512 + 1.5 x 8192 + 8/8 x 1024 + 2 x 256 = 14336 MiB
    assert memory.sglang_mem_fraction(h100, tp=8).value == round((81559 - 14336) / 81559, 3)
    h200 = 143771 << 20
    assert memory.sglang_mem_fraction(h200, tp=4).value == round((143771 - (512 + 12288 + 512 + 512)) / 143771, 3)
    # Small GPUs: the 10 GiB floor only applies above 60 GB.
    l4 = 23034 << 20
    chunked, graph = memory.sglang_defaults(l4)
    assert (chunked, graph) == (2048, 24)


def test_sglang_pools_split_rest_by_the_mamba_ratio():
    static, weights = 60 * GIB, 40 * GIB
    state, kv = 24 * (1 << 20), 15360
    pools = memory.sglang_pools(static, weights, state, kv)
    rest = 20 * GIB
    assert pools.state_slots.value == int(rest * 0.9 / 1.9 // state)
    used = pools.state_slots.value * state + pools.kv_tokens.value * kv
    assert rest - kv < used <= rest


def test_sglang_pools_with_speculation_reserve_intermediate_states():
    static, weights = 60 * GIB, 40 * GIB
    state, kv = 24 * (1 << 20), 15360
    plain = memory.sglang_pools(static, weights, state, kv, slots_per_request=5)
    spec = memory.sglang_pools(static, weights, state, kv, draft_tokens=4, slots_per_request=5,
                               max_running_requests=48)
    assert spec.state_slots.value < plain.state_slots.value
    assert spec.spec_intermediate.value == state * min(48, spec.state_slots.value // 5) * 4


def test_slot_pools_keep_room_for_one_full_context():
    rest, state, kv = 10 * GIB, 100 * (1 << 20), 32768
    slots, tokens = memory.slot_pools(rest, state, kv, wanted_slots=256, context_length=262144)
    assert tokens.value >= 262144
    assert slots.value == int((rest - 262144 * kv) // state)
    few, _ = memory.slot_pools(rest, state, kv, wanted_slots=4, context_length=262144)
    assert few.value == 4
