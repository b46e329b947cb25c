"""Start-up validation of a local checkpoint: damaged shards and bad generation defaults are one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from qwen35.launcher.checkpoint_check import check_checkpoint, check_generation_config, check_shard
from qwen35.planner.errors import InputError

QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from qwen35.runtime.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("demo") / "demo-model")


@pytest.fixture
def checkpoint(demo, tmp_path) -> Path:
    """A fresh copy of the demo checkpoint to damage."""
    return Path(shutil.copytree(demo, tmp_path / "demo-model"))


def one_line_error(call) -> str:
    with pytest.raises(InputError) as caught:
        call()
    assert caught.value.exit_code == 2
    line = caught.value.one_line()
    assert "\n" not in line
    return line


def test_the_demo_checkpoint_and_files_the_safetensors_library_writes_pass(demo, tmp_path):
    assert check_checkpoint(demo) == 2
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((3, 5), np.float16), "b": np.arange(7, dtype=np.int64), "c": np.ones((), np.float32),
               "empty": np.zeros((0, 4), np.uint8)}, str(path), metadata={"format": "pt"})
    check_shard(path)
    assert check_checkpoint(tmp_path) == 1


def test_a_truncated_shard_names_the_file_and_where_it_was_cut(checkpoint):
    shard = checkpoint / SHARD
    os.truncate(shard, shard.stat().st_size - 10)
    line = one_line_error(lambda: check_checkpoint(checkpoint))
    assert line.startswith(f"{shard}: cut short: ") and "download it again" in line


def test_an_empty_shard(checkpoint):
    (checkpoint / SHARD).write_bytes(b"")
    assert one_line_error(lambda: check_checkpoint(checkpoint)).startswith(f"{checkpoint / SHARD}: the file is empty")


@pytest.mark.parametrize("content, says", [
    (os.urandom(4096), "not a safetensors file (or cut short): its header length reads"),
    ((20).to_bytes(8, "little") + b"this is not json!!!!" + b"\0" * 64, "not a safetensors file: its header is not JSON"),
    (b"abc", "not a safetensors file: 3 bytes, too short for its header length"),
])
def test_a_garbage_shard(checkpoint, content, says):
    (checkpoint / SHARD).write_bytes(content)
    assert one_line_error(lambda: check_checkpoint(checkpoint)).startswith(f"{checkpoint / SHARD}: {says}")


def test_a_shard_missing_a_tensor_its_index_puts_there(checkpoint):
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.language_model.layers.99.mlp.up_proj.weight"] = SHARD
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    line = one_line_error(lambda: check_checkpoint(checkpoint))
    assert line.startswith(f"{checkpoint / SHARD}: model.safetensors.index.json puts "
                           "model.language_model.layers.99.mlp.up_proj.weight in this shard")


def test_a_deleted_shard(checkpoint):
    (checkpoint / SHARD).unlink()
    assert one_line_error(lambda: check_checkpoint(checkpoint)).startswith(
        f"{checkpoint / SHARD}: missing (named by model.safetensors.index.json)")


@pytest.mark.parametrize("change, says", [
    ({"top_k": -7}, "top_k: expected an integer >= 1, or 0 / -1 for off, got -7"),
    ({"temperature": "hot"}, 'temperature: expected a number in [0, 2], got "hot"'),
    ({"temperature": True}, "temperature: expected a number in [0, 2], got true"),
    ({"top_p": 0}, "top_p: expected a number in (0, 1], got 0"),
    ({"top_k": 2.5}, "top_k: expected an integer >= 1, or 0 / -1 for off, got 2.5"),
    ({"repetition_penalty": 0}, "repetition_penalty: expected a number in (0, 2] (1 = off), got 0"),
    ({"do_sample": "yes"}, 'do_sample: expected true or false, got "yes"'),
    ({"eos_token_id": [248046, "eos"]}, 'eos_token_id: expected a token id (an integer >= 0) or a list of them, '
                                        'got [248046, "eos"]'),
])
def test_an_invalid_generation_default_names_the_file_and_key(checkpoint, change, says):
    path = checkpoint / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    line = one_line_error(lambda: check_generation_config(checkpoint))
    assert line.startswith(f"{path}: {says}; fix or remove that key")


def test_generation_config_that_is_not_json(checkpoint):
    (checkpoint / "generation_config.json").write_text('{"top_k": 20,}')
    assert one_line_error(lambda: check_checkpoint(checkpoint)).startswith(
        f"{checkpoint / 'generation_config.json'}: not valid JSON (line 1, column 14")


def test_launch_stops_before_starting_the_engine_on_a_damaged_shard(checkpoint, tmp_path):
    shard = checkpoint / SHARD
    os.truncate(shard, shard.stat().st_size // 2)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("QWEN35_DEBUG", None)
    done = subprocess.run([*QWEN35, "launch", "--model", str(checkpoint), "--gpu", "cpu", "--engine", "bundled",
                           "--port", "8799"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"preflight model: FAIL - {shard}: cut short: " in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {shard}: cut short: ")
    assert "Traceback" not in done.stderr and "starting bundled" not in done.stderr


def test_the_preflight_warns_of_a_folder_without_safetensors_weights(tmp_path):
    from qwen35.planner.models.registry import registry_config_json

    (tmp_path / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    done = subprocess.run([*QWEN35, "launch", "--model", str(tmp_path), "--gpu", "cpu", "--engine", "bundled",
                           "--port", "8799", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert f"preflight model: warn - {tmp_path} holds no safetensors weights" in done.stderr
