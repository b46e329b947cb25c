"""Broken checkpoints fail with a CheckpointError (exit code 2) that names the problem."""
import json

import pytest
import torch

from qwen35.planner.errors import InputError
from qwen35.runtime import CheckpointError, load_model
from qwen35_tiny_checkpoints import copy_checkpoint, read_config, read_tensors, write_checkpoint

QKV = "model.language_model.layers.0.linear_attn.in_proj_qkv.weight"


@pytest.fixture
def broken(hf_checkpoints, tmp_path):
    """A private copy of the dense tied checkpoint to damage."""
    path, _ = hf_checkpoints("dense_tied")
    return copy_checkpoint(path, tmp_path / "ckpt")


def load_error(path, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_model(path, progress=False, **kwargs)
    return info.value


def test_error_class_maps_to_exit_code_2():
    assert issubclass(CheckpointError, InputError) and CheckpointError.exit_code == 2


def test_missing_tensor_is_named(broken):
    tensors = read_tensors(broken)
    del tensors[QKV]
    write_checkpoint(broken, tensors, read_config(broken))
    err = load_error(broken)
    assert f"'{QKV}'" in err.message and "missing" in err.message
    assert "[96, 32]" in err.message  # the shape the config implies


def test_wrong_shape_names_tensor_and_both_shapes(broken):
    tensors = read_tensors(broken)
    tensors[QKV] = torch.zeros(95, 32)
    write_checkpoint(broken, tensors, read_config(broken))
    err = load_error(broken)
    assert f"'{QKV}'" in err.message
    assert "[95, 32]" in err.message and "[96, 32]" in err.message


def test_unexpected_tensor_is_named(broken):
    tensors = read_tensors(broken)
    tensors["model.language_model.layers.0.linear_attn.extra.weight"] = torch.zeros(3)
    write_checkpoint(broken, tensors, read_config(broken))
    err = load_error(broken)
    assert "unexpected" in err.message and "linear_attn.extra.weight" in err.message


def test_missing_config_json(broken):
    (broken / "config.json").unlink()
    err = load_error(broken)
    assert "config.json" in err.message and str(broken) in err.message


def test_unsupported_model_type(broken):
    config = read_config(broken)
    config["model_type"] = "llama"
    (broken / "config.json").write_text(json.dumps(config))
    err = load_error(broken)
    assert "'llama'" in err.message and "qwen3_5" in err.hint


def test_rope_scaling_we_do_not_implement_is_refused(broken):
    config = read_config(broken)
    config["text_config"]["rope_parameters"].update(rope_type="yarn", factor=4.0)
    (broken / "config.json").write_text(json.dumps(config))
    err = load_error(broken)
    assert "'yarn'" in err.message


def test_index_pointing_at_a_missing_shard(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("dense_tied")
    sharded = write_checkpoint(tmp_path / "sharded", read_tensors(path), read_config(path), shards=3)
    (sharded / "model.safetensors-00002-of-00003.safetensors").unlink()
    err = load_error(sharded)
    assert "model.safetensors-00002-of-00003.safetensors" in err.message
    assert "model.safetensors.index.json" in err.message


def test_no_weights_at_all(broken):
    (broken / "model.safetensors").unlink()
    err = load_error(broken)
    assert "model.safetensors" in err.message


def test_fp8_weight_without_its_scale(hf_checkpoints, tmp_path):
    from qwen35_tiny_checkpoints import to_fp8

    path, _ = hf_checkpoints("dense_tied")
    fp8, _, config = to_fp8(read_tensors(path), read_config(path))
    del fp8[QKV.replace(".weight", ".weight_scale_inv")]
    err = load_error(write_checkpoint(tmp_path / "fp8", fp8, config))
    assert "in_proj_qkv.weight_scale_inv" in err.message


def test_hub_id_not_in_cache_says_how_to_get_it(tmp_path):
    err = load_error("Qwen/Qwen3.5-Nonexistent", cache_dir=tmp_path / "empty-hub")
    assert "Qwen/Qwen3.5-Nonexistent" in err.message and "cache" in err.message
    assert "hf download Qwen/Qwen3.5-Nonexistent" in err.hint


def test_local_path_that_does_not_exist(tmp_path):
    err = load_error(tmp_path / "nope" / "deeper")
    assert "nope" in err.message
