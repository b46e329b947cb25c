"""`qwen35 profiles` and `qwen35 plan --profile/--yaml` run as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from qwen35.launcher.profiles import shipped_names
from qwen35.planner.models.registry import registry_config_json

QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("QWEN35_DEBUG", None)
    return subprocess.run([*QWEN35, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_multi_node_plan_yaml_round_trips_through_plan_profile(tmp_path):
    flags = ["--model", "Qwen3.5-397B-A17B", "--precision", "bf16", "--gpu", "H100:8", "--nodes", "2",
             "--dist-init-addr", "10.0.0.1:20000"]
    first = run("plan", *flags, "--yaml")
    assert first.returncode == 0, first.stderr
    (tmp_path / "plan.yaml").write_text(first.stdout)
    document = yaml.safe_load(first.stdout)
    assert document["parallel"]["nodes"] == 2 and "request" not in document
    assert document["profile"]["hardware"] == {"gpu": "H100", "count": 8, "nodes": 2}
    assert document["profile"]["engine"]["version"] == document["engine_version"]
    again = run("plan", "--profile", str(tmp_path / "plan.yaml"), "--json")  # --json prints the same keys
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(json.dumps(document))


def test_list_show_and_validate(tmp_path):
    listed = run("profiles", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert sorted(rows) == shipped_names()
    assert rows["qwen35-397b-a17b-base"]["base"] is True
    assert rows["qwen35-397b-a17b-h200-fp8"] | {"path": ""} == {
        "name": "qwen35-397b-a17b-h200-fp8", "path": "", "base": False, "model": "Qwen3.5-397B-A17B",
        "precision": "fp8", "gpu": "H200", "count": 8, "nodes": 1, "engine": "sglang"}

    shown = run("profiles", "show", "qwen35-397b-a17b-h200-fp8")
    assert shown.returncode == 0, shown.stderr
    merged = yaml.safe_load(shown.stdout)
    assert merged["model"] == "Qwen3.5-397B-A17B" and merged["serving"]["port"] == 30000 and "extends" not in merged
    raw = run("profiles", "show", "qwen35-397b-a17b-h200-fp8", "--raw")
    assert "extends: qwen35-397b-a17b-base.yaml" in raw.stdout and raw.stdout.startswith("#")

    good = tmp_path / "good.yaml"
    good.write_text("extends: qwen35-397b-a17b-base\nprecision: fp8\nhardware: {gpu: B200, count: 8}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: Qwen3.5-9B\nhardware:\n  gpu: H100\n  count: two\nserving:\n  prot: 1\n")
    done = run("profiles", "validate", "good.yaml", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "ok: good.yaml",
        "bad.yaml:5:3: hardware.count: expected an integer, got 'two'",
        "bad.yaml:7:3: serving.prot: unknown key; did you mean port?; allowed: host, port, context_length, strategy, "
        "max_running_requests, served_model_name, api_key_env, mamba_strategy, mamba_ssm_dtype, dist_init_addr",
    ]


def test_plan_with_a_bad_profile_is_one_located_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: Qwen3.5-9B\nhardware: {gpu: H100, count: 1}\nserving:\n  port: abc\n")
    done = run("plan", "--profile", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: bad.yaml:5:3: serving.port: expected an integer, got 'abc'"
    missing = run("plan", "--profile", "no-such-profile")
    assert missing.returncode == 2 and "shipped profiles: " in missing.stderr


def test_a_relative_model_path_is_read_from_the_profile_files_folder(tmp_path):
    folder = tmp_path / "deploy"
    (folder / "ckpt").mkdir(parents=True)
    (folder / "ckpt" / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    (folder / "demo.yaml").write_text("version: 1\nmodel: ./ckpt\nhardware: {gpu: cpu, count: 1}\n"
                                      "engine: {name: bundled}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run("plan", "--profile", str(folder / "demo.yaml"), "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["commands"][0]["argv"][3] == str(folder / "ckpt")


def test_a_missing_model_folder_says_where_it_looked_and_how_paths_are_read(tmp_path):
    done = run("plan", "--profile", "qwen35-demo-cpu", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"model folder ./demo-model does not exist (looked for {tmp_path / 'demo-model'})" in done.stderr
    assert "read from the profile file's folder" in done.stderr
