"""`qwen35 demo-model` run as a user runs it: a subprocess, data on stdout, one-line errors on stderr."""
import json
import os
import subprocess
import sys

CLI = [sys.executable, "-m", "qwen35.launcher.cli"]


def run(*args):
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("QWEN35_DEBUG", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_writes_then_refuses_a_non_empty_directory(tmp_path):
    target = tmp_path / "demo"
    first = run("demo-model", str(target), "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{target}\n"
    assert (target / "config.json").is_file() and (target / "model.safetensors.index.json").is_file()
    assert "wrote a tiny demo checkpoint (seed 3)" in first.stderr

    again = run("demo-model", str(target))
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr.strip().count("\n") == 0
    assert again.stderr.startswith(f"error: {target} is not empty") and "--force" in again.stderr


def test_json_output_and_force(tmp_path):
    target = tmp_path / "demo"
    target.mkdir()
    (target / "config.json").write_text("{}")
    result = run("demo-model", str(target), "--force", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["path"] == str(target) and report["seed"] == 0 and report["shape"] == "tiny"
    assert "model-00002-of-00002.safetensors" in report["files"]


def test_help_shows_an_example_and_bad_shape_is_usage_error(tmp_path):
    shown = run("demo-model", "--help")
    assert shown.returncode == 0
    assert "qwen35 demo-model ./qwen35-demo" in shown.stdout and "--seed" in shown.stdout
    bad = run("demo-model", str(tmp_path / "x"), "--shape", "huge")
    assert bad.returncode == 2 and "unknown demo shape 'huge'" in bad.stderr
    assert not (tmp_path / "x").exists()
