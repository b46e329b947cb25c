"""`qwen35 plan` run as a user runs it: a subprocess, its stdout, stderr and exit code."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("QWEN35_DEBUG", None)
    return subprocess.run([*QWEN35, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_json_plan_has_the_keys_other_tools_read():
    done = run("plan", "--model", "Qwen3.5-397B-A17B", "--precision", "bf16", "--gpu", "H100:8", "--nodes", "2",
               "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    for key in ("model", "precision", "engine", "engine_version", "fits", "context_length",
                "max_running_requests", "mamba_strategy", "page_size", "mem_fraction_static",
                "warnings", "reasons"):
        assert key in plan
    assert set(plan["parallel"]) >= {"tp", "ep", "dp", "pp", "nodes", "gpus_per_node"}
    assert set(plan["memory"]) >= {"weights_total_bytes", "weights_per_gpu_bytes",
                                   "kv_bytes_per_token_per_gpu", "state_bytes_per_request_per_gpu"}
    assert plan["parallel"]["tp"] == 16 and plan["parallel"]["nodes"] == 2
    assert [c["node_rank"] for c in plan["commands"]] == [0, 1]
    assert all(c["argv"][:3] == ["python3", "-m", "sglang.launch_server"] for c in plan["commands"])
    assert "NODE0_IP" in done.stderr  # warnings go to stderr, data to stdout


def test_human_view_shows_commands_and_memory():
    done = run("plan", "--model", "Qwen3.5-9B", "--gpu", "H100:1", "--explain")
    assert done.returncode == 0, done.stderr
    assert "sglang.launch_server" in done.stdout
    assert "memory per GPU" in done.stdout
    assert "kv_bytes_per_token_per_gpu" in done.stdout  # --explain lists each figure


def test_vllm_plan_shows_one_block_pool_that_fits_the_gpu():
    args = ("plan", "--model", "Qwen3.5-35B-A3B", "--gpu", "MI300X:8", "--engine", "vllm")
    memory = json.loads(run(*args, "--json").stdout)["memory"]
    # KV and the linear-attention states share vLLM's blocks: one pool, counted once.
    assert memory["block_tokens"] > 0 and memory["state_slots"] > 0
    reserve = memory["gpu_memory_bytes"] - memory["static_bytes"]
    assert memory["weights_per_gpu_bytes"] + memory["block_pool_bytes"] + reserve <= memory["gpu_memory_bytes"]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert "KV cache and state" in done.stdout and f"{memory['state_slots']} blocks of" in done.stdout
    assert "linear-attention state" not in done.stdout
    sglang = run("plan", "--model", "Qwen3.5-35B-A3B", "--gpu", "MI300X:8")
    assert "linear-attention state" in sglang.stdout and "KV cache and state" not in sglang.stdout


def test_yaml_output_parses():
    import yaml

    done = run("plan", "--model", "Qwen3.5-27B", "--gpu", "H200:1", "--yaml")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["fits"] is True


def test_nothing_fits_exits_3_with_ways_out():
    done = run("plan", "--model", "Qwen3.5-397B-A17B", "--precision", "bf16", "--gpu", "RTX4090:1",
               "--nodes", "1", "--json")
    assert done.returncode == 3, done.stderr
    plan = json.loads(done.stdout)
    assert plan["fits"] is False
    ways = " ".join(way["flags"] for way in plan["ways_out"])
    # FP8 (~400 GB) or eight cards do not hold it either: a re-planned way out is a smaller model.
    assert ways == "--model Qwen3.5-2B"
    assert plan["ways_out"][0]["tp"] == 1 and plan["ways_out"][0]["nodes"] == 1


def test_one_consumer_gpu_that_needs_several_exits_3_not_a_silent_multi_node_plan():
    done = run("plan", "--model", "Qwen3.5-27B", "--gpu", "RTX4090:1", "--json")
    assert done.returncode == 3, done.stdout
    plan = json.loads(done.stdout)
    assert plan["fits"] is False and plan["parallel"] is None
    assert all(way["nodes"] == 1 for way in plan["ways_out"])


def test_multi_node_only_when_asked_and_offered_as_a_way_out():
    done = run("plan", "--model", "Qwen3.5-397B-A17B", "--precision", "bf16", "--gpu", "H100:8")
    assert done.returncode == 3
    assert "--nodes 2 (2 nodes of 8 x H100): tp 16, 2 node(s)" in done.stdout.replace("\n", " ")


def test_gpu_memory_plans_a_gpu_outside_the_catalogue():
    done = run("plan", "--model", "Qwen3.5-9B", "--gpu", "A6000:2", "--gpu-memory", "47.5", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["fits"] and plan["memory"]["gpu_memory_bytes"] == int(47.5 * (1 << 30))
    small = run("plan", "--model", "Qwen3.5-9B", "--gpu", "A6000:1", "--gpu-memory", "12", "--json")
    assert small.returncode == 3 and json.loads(small.stdout)["fits"] is False


@pytest.mark.parametrize("given, expected", [("47.5", 47.5 * (1 << 30)), ("47.5GiB", 47.5 * (1 << 30)),
                                             ("48 G", 48 << 30), ("48.", 48 << 30), ("49140MiB", 49140 << 20), ("51.5GB", 51.5e9),
                                             ("1TiB", 1 << 40)])
def test_gpu_memory_takes_units(given, expected):
    from qwen35.launcher.commands.plan_options import memory_size_bytes

    assert memory_size_bytes(given) == int(expected)


@pytest.mark.parametrize("given", ["0", "-4", "48 GiBs", "lots", "", "4..5", "0.0000000001"])
def test_gpu_memory_refuses_what_is_not_a_size(given):
    from qwen35.launcher.commands.plan_options import memory_size_bytes
    from qwen35.planner.errors import InputError

    with pytest.raises(InputError, match="--gpu-memory must be a positive size"):
        memory_size_bytes(given)


BAD_INPUTS = {
    "unknown model": (["--model", "Qwen3.5-1000B", "--gpu", "H100:8"], "Qwen3.5-1000B"),
    "unknown gpu": (["--model", "Qwen3.5-9B", "--gpu", "H900:8"], "--gpu-memory"),
    "non-positive gpu memory": (["--model", "Qwen3.5-9B", "--gpu", "A6000:1", "--gpu-memory", "0"], "--gpu-memory"),
    "gpu memory in no unit": (["--model", "Qwen3.5-9B", "--gpu", "A6000:1", "--gpu-memory", "48 bananas"], "49140MiB"),
    "precision the checkpoint lacks": (["--model", "Qwen3.5-0.8B", "--precision", "fp8", "--gpu", "H100:1"], "FP8"),
    "precision the gpu lacks": (["--model", "Qwen3.5-397B-A17B", "--precision", "nvfp4", "--gpu", "H100:8"], "NVFP4"),
    "unknown precision": (["--model", "Qwen3.5-9B", "--precision", "int3", "--gpu", "H100:1"], "int3"),
    "zero gpus": (["--model", "Qwen3.5-9B", "--gpu", "H100:0"], "0"),
    "negative nodes": (["--model", "Qwen3.5-9B", "--gpu", "H100:8", "--nodes", "-1"], "nodes"),
    "zero running requests": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--max-running-requests", "0"], "max-running-requests"),
    "context above the maximum": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--context-length", "300000"], "262144"),
    "two outputs": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--json", "--yaml"], "--json and --yaml"),
    "sglang release before qwen3.5": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--engine-version", "0.4.0"],
                                      "sglang 0.5.13.post1, the first release"),
    "vllm release before qwen3.5": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--engine", "vllm",
                                     "--engine-version", "0.10.0"], "vllm 0.17.0, the first release"),
    "engine version not a release": (["--model", "Qwen3.5-9B", "--gpu", "H100:1", "--engine-version", "latest"],
                                     "not a release number"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case):
    args, mentioned = BAD_INPUTS[case]
    done = run("plan", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and mentioned in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_and_malformed_config_json(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run("plan", "--model", str(empty), "--gpu", "H100:1")
    assert done.returncode == 2 and "config.json" in done.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    done = run("plan", "--model", str(broken), "--gpu", "H100:1")
    assert done.returncode == 2 and "config.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_plan_json_does_not_import_torch():
    code = (
        "import sys\n"
        "sys.argv = ['qwen35', 'plan', '--model', 'Qwen3.5-9B', '--gpu', 'H100:1', '--json']\n"
        "from qwen35.launcher import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('TORCH=%s' % ('torch' in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "TORCH=False" in done.stderr
    assert json.loads(done.stdout)["fits"] is True


def test_unknown_option_is_a_usage_error_not_a_traceback():
    done = run("plan", "--bogus")
    assert done.returncode == 2
    assert "No such option" in done.stderr and "Traceback" not in done.stderr


def test_local_checkpoint_index_total_size_is_cross_checked(tmp_path: Path):
    from qwen35.planner.models.registry import registry_config_json, resolve_model

    expected = run("plan", "--model", "Qwen3.5-9B", "--gpu", "H100:1", "--json")
    weights_total = json.loads(expected.stdout)["memory"]["weights_total_bytes"]
    for name, total, warned in (("agrees", weights_total, False), ("disagrees", weights_total // 2, True)):
        checkpoint = tmp_path / name
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-9B")))
        (checkpoint / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": int(total)}, "weight_map": {}}))
        assert resolve_model(str(checkpoint)).index_total_size == int(total)
        done = run("plan", "--model", str(checkpoint), "--gpu", "H100:1", "--json")
        assert done.returncode == 0, done.stderr
        plan = json.loads(done.stdout)
        assert plan["memory"]["checkpoint_index_total_size_bytes"] == int(total)
        assert ("index lists" in " ".join(plan["warnings"])) is warned
