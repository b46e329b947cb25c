"""config.json parsing, loading and writing for Qwen3.5 checkpoints."""
import json
import subprocess
import sys

import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import config_to_dict, load_config, parse_config

# Shape of the real Qwen/Qwen3.5-27B config.json (layer_types elided: derived from the interval).
REAL_27B = {
    "architectures": ["Qwen3_5ForConditionalGeneration"],
    "image_token_id": 248056,
    "language_model_only": False,
    "model_type": "qwen3_5",
    "text_config": {
        "attention_bias": False, "attn_output_gate": True, "bos_token_id": 248044,
        "dtype": "bfloat16", "eos_token_id": 248044, "full_attention_interval": 4,
        "head_dim": 256, "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 17408,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
        "linear_num_value_heads": 48, "linear_value_head_dim": 128, "mamba_ssm_dtype": "float32",
        "max_position_embeddings": 262144, "model_type": "qwen3_5_text",
        "mtp_num_hidden_layers": 1, "mtp_use_dedicated_embeddings": False,
        "num_attention_heads": 24, "num_hidden_layers": 64, "num_key_value_heads": 4,
        "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06,
        "rope_parameters": {"mrope_interleaved": True, "mrope_section": [11, 11, 10],
                            "partial_rotary_factor": 0.25, "rope_theta": 10000000,
                            "rope_type": "default"},
        "tie_word_embeddings": False, "use_cache": True, "vocab_size": 248320,
    },
    "tie_word_embeddings": False,
    "video_token_id": 248057,
    "vision_config": {
        "deepstack_visual_indexes": [], "depth": 27, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152, "in_channels": 3, "intermediate_size": 4304,
        "model_type": "qwen3_5", "num_heads": 16, "num_position_embeddings": 2304,
        "out_hidden_size": 5120, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "vision_end_token_id": 248054,
    "vision_start_token_id": 248053,
}


def test_parses_real_27b_config():
    cfg = parse_config(REAL_27B)
    t = cfg.text
    assert (cfg.model_type, t.model_type, t.is_moe) == ("qwen3_5", "qwen3_5_text", False)
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers) == (5120, 17408, 64)
    assert (t.num_attention_heads, t.num_key_value_heads, t.linear_num_value_heads) == (24, 4, 48)
    assert t.rope_theta == 1e7 and t.partial_rotary_factor == 0.25
    assert t.mrope_section == (11, 11, 10) and t.mrope_interleaved
    assert t.full_attention_layer_ids == tuple(range(3, 64, 4))
    assert len(t.linear_attention_layer_ids) == 48
    assert t.mtp_num_hidden_layers == 1 and t.eos_token_ids == (248044,)
    assert t.num_experts == 0 and not cfg.tie_word_embeddings
    assert cfg.vision.depth == 27 and cfg.vision.out_hidden_size == 5120
    assert cfg.quantization is None and cfg.image_token_id == 248056


def test_explicit_layer_types_are_kept(dense_raw):
    dense_raw["text_config"]["layer_types"] = ["full_attention", "linear_attention",
                                               "linear_attention", "full_attention"]
    assert parse_config(dense_raw).text.full_attention_layer_ids == (0, 3)


def test_legacy_rope_scaling_and_flat_keys(dense_raw):
    text = dense_raw["text_config"]
    del text["rope_parameters"]
    text.update(rope_theta=5e6, partial_rotary_factor=0.5,
                rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]})
    t = parse_config(dense_raw).text
    assert (t.rope_theta, t.partial_rotary_factor, t.mrope_section) == (5e6, 0.5, (2, 1, 1))
    assert t.rope_type == "mrope"


def test_rope_dict_wins_over_flat_keys(dense_raw):
    dense_raw["text_config"]["rope_theta"] = 1.0
    assert parse_config(dense_raw).text.rope_theta == 1e7


def test_moe_fields_and_missing_intermediate_size(moe_raw):
    t = parse_config(moe_raw).text
    assert t.is_moe and t.intermediate_size is None
    assert (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size) == (4, 2, 8)
    assert t.shared_expert_intermediate_size == 8 and t.norm_topk_prob


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda r: r.update(model_type="llama"), "model_type 'llama'"),
        (lambda r: r.pop("text_config"), "'text_config'"),
        (lambda r: r["text_config"].pop("hidden_size"), "'text_config.hidden_size'"),
        (lambda r: r["text_config"].update(hidden_size="32"), "text_config.hidden_size"),
        (lambda r: r["text_config"].update(num_hidden_layers=True), "an integer"),
        (lambda r: r["text_config"].update(num_attention_heads=0), "positive"),
        (lambda r: r["text_config"].update(layer_types=["full_attention"]), "lists 1 layers"),
        (lambda r: r["text_config"].update(layer_types=["mamba"] * 4), "unknown entries"),
        (lambda r: r["text_config"].update(model_type="qwen3_5_moe_text"), "qwen3_5_moe_text"),
        (lambda r: r.update(vision_config=[1]), "'vision_config' must be a JSON object"),
        (lambda r: r.update(quantization_config={"quant_method": "gptq"}), "'gptq'"),
    ],
)
def test_bad_input_names_the_problem(dense_raw, edit, words):
    edit(dense_raw)
    with pytest.raises(InputError) as err:
        parse_config(dense_raw, source="/ckpt/config.json")
    assert words in err.value.message
    assert err.value.message.startswith("/ckpt/config.json")
    assert err.value.hint


def test_top_level_must_be_object():
    with pytest.raises(InputError, match="JSON object"):
        parse_config([1, 2])


def test_eos_list_is_kept(dense_raw):
    dense_raw["text_config"]["eos_token_id"] = [248044, 248046]
    t = parse_config(dense_raw).text
    assert t.eos_token_ids == (248044, 248046)
    assert parse_config(config_to_dict(parse_config(dense_raw))).text == t


FP8_QUANT = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
             "weight_block_size": [128, 128],
             "modules_to_not_convert": ["lm_head", "model.visual.blocks.0.attn.qkv"]}
NVFP4_QUANT = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
               "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head", "mtp*"]}
NVFP4_CT_QUANT = {"quant_method": "modelopt", "quant_algo": "NVFP4",
                  "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 16}}},
                  "kv_cache_scheme": {"num_bits": 8, "type": "float"}, "ignore": ["lm_head"]}


def test_fp8_quantization(dense_raw):
    dense_raw["quantization_config"] = FP8_QUANT
    q = parse_config(dense_raw).quantization
    assert (q.method, q.fmt, q.weight_block_size, q.activation_scheme) == (
        "fp8", "e4m3", (128, 128), "dynamic")
    assert q.ignore == ("lm_head", "model.visual.blocks.0.attn.qkv") and q.kv_cache_dtype is None


@pytest.mark.parametrize("quant, ignore", [(NVFP4_QUANT, ("lm_head", "mtp*")),
                                           (NVFP4_CT_QUANT, ("lm_head",))])
def test_modelopt_nvfp4_quantization(moe_raw, quant, ignore):
    moe_raw["quantization_config"] = quant
    q = parse_config(moe_raw).quantization
    assert (q.method, q.fmt, q.group_size, q.kv_cache_dtype) == ("nvfp4", "e2m1", 16, "fp8")
    assert q.ignore == ignore


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("quant", [None, FP8_QUANT, NVFP4_QUANT, NVFP4_CT_QUANT])
def test_round_trip(make_raw, moe, quant):
    raw = make_raw(moe=moe)
    if quant is not None:
        raw["quantization_config"] = quant
    cfg = parse_config(raw)
    again = parse_config(json.loads(json.dumps(config_to_dict(cfg))))
    assert again == cfg


def test_round_trip_without_vision(dense_raw):
    del dense_raw["vision_config"]
    cfg = parse_config(dense_raw)
    assert cfg.vision is None
    assert parse_config(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("moe", [False, True])
def test_transformers_autoconfig_accepts_our_dict(make_raw, moe):
    transformers = pytest.importorskip("transformers")
    cfg = parse_config(make_raw(moe=moe))
    hf = transformers.AutoConfig.for_model(**config_to_dict(cfg))
    text = hf.text_config
    assert type(hf).__name__ == ("Qwen3_5MoeConfig" if moe else "Qwen3_5Config")
    assert text.hidden_size == cfg.text.hidden_size
    assert list(text.layer_types) == list(cfg.text.layer_types)
    assert text.rope_parameters["rope_theta"] == cfg.text.rope_theta
    assert text.rope_parameters["partial_rotary_factor"] == cfg.text.partial_rotary_factor
    assert hf.vision_config.out_hidden_size == cfg.vision.out_hidden_size
    if moe:
        assert (text.num_experts, text.moe_intermediate_size) == (4, 8)


def test_real_config_round_trips_through_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = parse_config(REAL_27B)
    hf = transformers.AutoConfig.for_model(**config_to_dict(cfg))
    assert parse_config(hf.to_dict()) == cfg


def test_load_config_from_dir_and_file(tmp_path, dense_raw):
    (tmp_path / "config.json").write_text(json.dumps(dense_raw))
    assert load_config(tmp_path) == load_config(tmp_path / "config.json") == parse_config(dense_raw)


def test_load_config_reads_modelopt_sidecar(tmp_path, moe_raw):
    (tmp_path / "config.json").write_text(json.dumps(moe_raw))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(
        {"producer": {"name": "modelopt"},
         "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8",
                          "group_size": 16, "exclude_modules": ["lm_head"]}}))
    q = load_config(tmp_path).quantization
    assert (q.method, q.kv_cache_dtype, q.ignore) == ("nvfp4", "fp8", ("lm_head",))


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_config(tmp_path)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(InputError) as err:
        load_config(tmp_path)
    assert str(bad) in err.value.message and "not valid JSON" in err.value.message


def test_planner_models_never_imports_torch():
    code = ("import sys, qwen35.planner.models, qwen35.planner.models.registry, "
            "qwen35.planner.models.weights; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_yarn_rope_extras_round_trip_and_config_is_hashable(dense_raw):
    dense_raw["text_config"]["rope_parameters"].update(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=262144)
    cfg = parse_config(dense_raw)
    assert cfg.text.rope_type == "yarn"
    assert dict(cfg.text.rope_extra) == {"factor": 4.0, "original_max_position_embeddings": 262144}
    assert parse_config(config_to_dict(cfg)) == cfg
    assert hash(cfg) == hash(parse_config(config_to_dict(cfg)))
