"""The registry of the eight checkpoints and resolve_model."""
import json

import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import config_to_dict
from qwen35.planner.models.registry import MODEL_NAMES, registry_config, resolve_model


def test_eight_models_with_facts_sheet_shapes():
    assert len(MODEL_NAMES) == 8
    small = registry_config("Qwen3.5-0.8B")
    assert (small.text.hidden_size, small.text.intermediate_size, small.tie_word_embeddings) == (
        1024, 3584, True)
    assert small.vision.out_hidden_size == 1024 and small.vision.depth == 12
    big = registry_config("Qwen3.5-397B-A17B")
    t = big.text
    assert (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size) == (512, 10, 1024)
    assert (t.num_hidden_layers, len(t.full_attention_layer_ids)) == (60, 15)
    assert (t.rope_theta, t.max_position_embeddings, t.mtp_num_hidden_layers) == (1e7, 262144, 1)
    assert big.vision.out_hidden_size == 4096 and not big.tie_word_embeddings


@pytest.mark.parametrize("spec", ["Qwen3.5-9B", "qwen3.5-9b", " QWEN3.5-9B ", "Qwen/Qwen3.5-9B"])
def test_registry_names_and_hub_ids(spec):
    r = resolve_model(spec)
    assert (r.name, r.hub_id, r.stored_precision, r.local_path) == (
        "Qwen3.5-9B", "Qwen/Qwen3.5-9B", "bf16", None)
    assert r.config.quantization is None and r.available_precisions == ("bf16", "fp8")


def test_fp8_and_nvfp4_hub_ids():
    fp8 = resolve_model("Qwen/Qwen3.5-9B-FP8")
    assert (fp8.stored_precision, fp8.hub_id) == ("fp8", "Qwen/Qwen3.5-9B-FP8")
    assert fp8.config.quantization.weight_block_size == (128, 128)
    fp4 = resolve_model("nvidia/Qwen3.5-397B-A17B-NVFP4")
    assert (fp4.name, fp4.stored_precision) == ("Qwen3.5-397B-A17B", "nvfp4")
    assert fp4.config.quantization.kv_cache_dtype == "fp8"
    assert fp4.available_precisions == ("bf16", "fp8", "nvfp4")
    assert resolve_model("Qwen3.5-0.8B").available_precisions == ("bf16",)


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(InputError) as err:
        resolve_model("Qwen3.5-8B")
    assert "Qwen3.5-8B" in err.value.message
    assert "did you mean" in err.value.hint and "Qwen3.5-397B-A17B" in err.value.hint


def test_missing_quantized_variant_says_what_exists():
    with pytest.raises(InputError) as err:
        resolve_model("Qwen/Qwen3.5-9B-NVFP4")
    assert "NVFP4" in err.value.message and "bf16, fp8" in err.value.hint


def test_local_directory(tmp_path):
    raw = config_to_dict(registry_config("Qwen3.5-27B", "fp8"))
    (tmp_path / "config.json").write_text(json.dumps(raw))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 30_900_000_000}, "weight_map": {}}))
    r = resolve_model(str(tmp_path))
    assert (r.name, r.stored_precision, r.hub_id) == ("Qwen3.5-27B", "fp8", "Qwen/Qwen3.5-27B-FP8")
    assert (r.local_path, r.index_total_size) == (str(tmp_path), 30_900_000_000)
    assert r.config.text.hidden_size == 5120


def test_local_directory_of_unknown_size(tmp_path, dense_raw):
    (tmp_path / "config.json").write_text(json.dumps(dense_raw))
    r = resolve_model(str(tmp_path))
    assert (r.name, r.hub_id, r.index_total_size) == (tmp_path.name, None, None)
    assert r.available_precisions == ("bf16",)


def test_local_directory_errors(tmp_path, dense_raw):
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dense_raw))
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(InputError, match="index"):
        resolve_model(str(tmp_path))
