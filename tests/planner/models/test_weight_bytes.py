"""weight_bytes against transformers' meta-device models and the deployment guide's sizes."""
import pytest

from qwen35.planner.models.config import config_to_dict, parse_config
from qwen35.planner.models.registry import MODEL_NAMES, registry_config
from qwen35.planner.models.weights import weight_bytes

GB = 1e9


def _mtp_params(t) -> int:
    """The MTP head counted from facts §2, independently of tensors.py."""
    h, d = t.hidden_size, t.head_dim
    attention = (h * t.num_attention_heads * d * 2 + 2 * h * t.num_key_value_heads * d
                 + t.num_attention_heads * d * h + 2 * d)
    if t.is_moe:
        mlp = (t.num_experts * h + t.num_experts * 3 * h * t.moe_intermediate_size
               + 3 * h * t.shared_expert_intermediate_size + h)
    else:
        mlp = 3 * h * t.intermediate_size
    layer = 2 * h + attention + mlp
    return 2 * h + 2 * h * h + t.mtp_num_hidden_layers * layer + h


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bf16_params_match_transformers_meta_model(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = registry_config(name)
    hf_config = transformers.AutoConfig.for_model(**config_to_dict(cfg))
    cls = (transformers.Qwen3_5MoeForConditionalGeneration if cfg.text.is_moe
           else transformers.Qwen3_5ForConditionalGeneration)
    with torch.device("meta"):
        model = cls(hf_config)
    # parameters() yields a tied lm_head once, as a tied checkpoint stores it once.
    reference = sum(p.numel() for p in model.parameters())
    ours = weight_bytes(cfg, "bf16")
    assert ours.params_by_component["language"] + ours.params_by_component["vision"] == reference
    assert ours.params_by_component["mtp"] == _mtp_params(cfg.text)
    assert ours.total_bytes == 2 * ours.params and ours.scale_bytes == 0


def test_397b_sizes_match_the_deployment_guide():
    cfg = registry_config("Qwen3.5-397B-A17B")
    bf16, fp8, fp4 = (weight_bytes(cfg, p) for p in ("bf16", "fp8", "nvfp4"))
    assert 780 * GB < bf16.total_bytes < 820 * GB
    assert 390 * GB < fp8.total_bytes < 420 * GB
    assert 235 * GB < fp4.total_bytes < 265 * GB
    assert bf16.params == fp8.params == fp4.params
    assert 395e9 < bf16.params < 410e9
    # Routed experts dominate and are the only FP4 tensors.
    assert fp4.bytes_by_sharding["expert"] > 0.8 * fp4.total_bytes
    assert fp8.scale_bytes > 0 and fp4.scale_bytes > 0


def test_breakdowns_add_up(moe_raw):
    cfg = parse_config(moe_raw)
    for precision in ("bf16", "fp8", "nvfp4"):
        w = weight_bytes(cfg, precision)
        assert sum(w.bytes_by_component.values()) == w.total_bytes
        assert sum(w.bytes_by_sharding.values()) == w.total_bytes
        assert sum(w.params_by_component.values()) == w.params


def test_tied_embeddings_are_counted_once(make_raw):
    tied = weight_bytes(parse_config(make_raw(tied=True)), "bf16")
    untied = weight_bytes(parse_config(make_raw(tied=False)), "bf16")
    assert untied.bytes_by_sharding["vocab"] == 2 * tied.bytes_by_sharding["vocab"]
    assert untied.params - tied.params == 64 * 32


def test_weight_bytes_is_fast_for_the_largest_model():
    import time

    cfg = registry_config("Qwen3.5-397B-A17B")
    start = time.perf_counter()
    weight_bytes(cfg, "nvfp4")
    assert time.perf_counter() - start < 0.5
