"""The demo checkpoint: the hub's file layout, exactly the real tensor set, readable by us and by transformers."""
import json

import pytest
import torch
from safetensors import safe_open

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import load_config
from qwen35.planner.models.tensors import SAFETENSORS_DTYPES, checkpoint_tensors
from qwen35.runtime.demo import checkpoint as demo_checkpoint
from qwen35.runtime.demo import demo_config, demo_weights, write_demo_checkpoint
from qwen35.runtime.tokenizer import load_tokenizer

FILES = [
    "chat_template.jinja", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
    "tokenizer.json", "tokenizer_config.json", "video_preprocessor_config.json",
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("demo") / "qwen35-demo", seed=0)


def read_json(path):
    return json.loads(path.read_text())


def test_file_set(demo_dir):
    assert sorted(entry.name for entry in demo_dir.iterdir()) == FILES
    # Nothing left beside it from the staging directory.
    assert [entry.name for entry in demo_dir.parent.iterdir()] == [demo_dir.name]


def test_config_is_a_small_but_real_qwen35(demo_dir):
    cfg = load_config(demo_dir)
    assert cfg == demo_config("tiny")
    text = cfg.text
    assert (cfg.model_type, text.vocab_size, text.head_dim, text.hidden_size) == ("qwen3_5", 248320, 256, 64)
    assert text.layer_types == ("linear_attention",) * 3 + ("full_attention",)
    assert text.mtp_num_hidden_layers == 1 and cfg.tie_word_embeddings
    assert (text.linear_key_head_dim, text.linear_value_head_dim) == (128, 128)
    assert (cfg.vision.patch_size, cfg.vision.out_hidden_size, cfg.vision.num_position_embeddings) == (16, 64, 2304)
    assert (cfg.image_token_id, cfg.video_token_id) == (248056, 248057)
    assert read_json(demo_dir / "config.json")["dtype"] == "bfloat16"


def test_transformers_reads_the_config(demo_dir):
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.from_pretrained(str(demo_dir))
    assert type(config).__name__ == "Qwen3_5Config"
    assert config.text_config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    assert config.text_config.num_attention_heads == 4 and config.vision_config.depth == 2


def test_index_covers_every_tensor_exactly_once(demo_dir):
    specs = {spec.name: spec for spec in checkpoint_tensors(demo_config("tiny"), "bf16")}
    index = read_json(demo_dir / "model.safetensors.index.json")
    assert set(index["weight_map"]) == set(specs)
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors",
                                                 "model-00002-of-00002.safetensors"}
    assert index["metadata"]["total_size"] == sum(spec.nbytes for spec in specs.values())
    seen = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(demo_dir / shard), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            for name in handle.keys():
                assert name not in seen, f"{name} stored twice"
                seen[name] = shard
                view = handle.get_slice(name)
                assert tuple(view.get_shape()) == specs[name].shape, name
                assert view.get_dtype() == SAFETENSORS_DTYPES[specs[name].dtype], name
    assert seen == index["weight_map"]


def stored(demo_dir, name):
    shard = read_json(demo_dir / "model.safetensors.index.json")["weight_map"][name]
    with safe_open(str(demo_dir / shard), framework="pt") as handle:
        return handle.get_tensor(name)


def test_weights_are_small_and_norms_neutral(demo_dir):
    for zero_centred in ("model.language_model.layers.0.input_layernorm.weight",
                         "model.language_model.layers.3.self_attn.q_norm.weight",
                         "model.language_model.norm.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight"):
        assert torch.all(stored(demo_dir, zero_centred) == 0), zero_centred
    for plain in ("model.language_model.layers.0.linear_attn.norm.weight", "model.visual.blocks.0.norm1.weight",
                  "model.language_model.layers.2.linear_attn.dt_bias"):
        assert torch.all(stored(demo_dir, plain) == 1), plain
    assert torch.all(stored(demo_dir, "model.visual.blocks.0.attn.qkv.bias") == 0)
    decay = stored(demo_dir, "model.language_model.layers.0.linear_attn.A_log").float().exp()
    assert torch.all((decay >= 0.99) & (decay <= 16.1))
    for name in ("model.language_model.layers.0.linear_attn.in_proj_qkv.weight",
                 "model.language_model.embed_tokens.weight"):
        assert 0.015 < stored(demo_dir, name).float().std().item() < 0.025, name


def test_weights_follow_the_seed():
    cfg = demo_config("tiny")
    first, again, other = demo_weights(cfg, seed=3), demo_weights(cfg, seed=3), demo_weights(cfg, seed=4)
    name = "model.language_model.layers.1.mlp.up_proj.weight"
    assert torch.equal(first[name], again[name])
    assert not torch.equal(first[name], other[name])
    assert all(tensor.dtype == torch.bfloat16 for tensor in first.values())


def test_small_json_files(demo_dir):
    generation = read_json(demo_dir / "generation_config.json")
    assert generation["eos_token_id"] == [248046, 248044] and generation["pad_token_id"] == 248044
    image = read_json(demo_dir / "preprocessor_config.json")
    video = read_json(demo_dir / "video_preprocessor_config.json")
    for processor in (image, video):
        assert (processor["patch_size"], processor["temporal_patch_size"], processor["merge_size"]) == (16, 2, 2)
        assert processor["image_mean"] == processor["image_std"] == [0.5, 0.5, 0.5]
        assert processor["size"] == {"shortest_edge": processor["min_pixels"],
                                     "longest_edge": processor["max_pixels"]}
    assert (image["min_pixels"], image["max_pixels"]) == (256 * 256, 4096 * 4096)
    assert video["video_processor_type"] == "Qwen3VLVideoProcessor"


def test_tokenizer_and_non_thinking_template(demo_dir):
    tokenizer = load_tokenizer(demo_dir)
    assert tokenizer.vocab_size == 248077 and tokenizer.eos_token_ids == (248046, 248044)
    prompt = tokenizer.chat_template.render([{"role": "user", "content": "Hi"}])
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_transformers_loads_every_weight(demo_dir):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.Qwen3_5ForConditionalGeneration.from_pretrained(
        str(demo_dir), output_loading_info=True, dtype=torch.bfloat16)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_dir))
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        load_tokenizer(demo_dir).chat_template.render(messages)


def test_refuses_a_non_empty_directory(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty"):
        write_demo_checkpoint(target)
    with pytest.raises(InputError, match="holds no config.json"):
        write_demo_checkpoint(target, overwrite=True)
    assert [entry.name for entry in target.iterdir()] == ["notes.txt"]
    with pytest.raises(InputError, match="not a directory"):
        write_demo_checkpoint(target / "notes.txt")


def test_overwrite_replaces_an_old_checkpoint(tmp_path):
    target = tmp_path / "old"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "stale.bin").write_text("x")
    path = write_demo_checkpoint(target, seed=1, overwrite=True)
    assert path == target and sorted(entry.name for entry in target.iterdir()) == FILES
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["old"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_disk(directory, weights):
        (directory / "model-00001-of-00002.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(demo_checkpoint, "_write_shards", broken_disk)
    with pytest.raises(OSError, match="disk full"):
        write_demo_checkpoint(tmp_path / "never")
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError):
        write_demo_checkpoint(empty)
    assert list(empty.iterdir()) == [] and sorted(entry.name for entry in tmp_path.iterdir()) == ["empty"]


def test_unknown_shape():
    with pytest.raises(InputError, match="unknown demo shape 'huge'"):
        write_demo_checkpoint("/nonexistent/never-written", shape="huge")
