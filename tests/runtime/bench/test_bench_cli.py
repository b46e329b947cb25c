"""`qwen35 bench` as a user runs it: a --quick run on the CPU, in a subprocess, with the baseline."""
import json
import os
import subprocess
import sys

import pytest

from qwen35.runtime.demo import write_demo_checkpoint

QWEN35 = [sys.executable, "-c", "from qwen35.launcher.cli import main; main()"]


def run_cli(*args, timeout=600):
    # One intra-op thread: the quick workload is tiny, and the test box has two shared cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*QWEN35, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    checkpoint = write_demo_checkpoint(root / "demo")
    saved = root / "bench.json"
    result = run_cli("bench", "--model", str(checkpoint), "--quick", "--speculative-tokens", "2", "--save", str(saved))
    return result, saved, checkpoint


def test_quick_run_prints_machine_workload_figures_and_ratios(quick_run):
    result, _, checkpoint = quick_run
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in ("machine:", "copy bandwidth", "workload:", "prefill 16 tok (ms)", "decode b=2 (tok/s)",
                     "transformers Qwen3_5ForCausalLM", "peak memory", "TTFT ms", "ITL ms", str(checkpoint),
                     "MTP k=2 b=1, head as is", "MTP k=2 b=1, guessing head"):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert "bench [" in result.stderr  # progress goes to stderr, data to stdout


def test_quick_run_json_holds_every_figure(quick_run):
    result, saved, _ = quick_run
    assert result.returncode == 0, result.stderr
    data = json.loads(saved.read_text())
    assert set(data) >= {"machine", "workload", "copy_gbs", "model", "sizing", "ours", "baseline", "server", "ratios"}
    ours, base = data["ours"], data["baseline"]
    assert "error" not in base, base.get("error")
    assert [r["tokens"] for r in ours["prefill"]] == [r["tokens"] for r in base["prefill"]] == [16, 40]
    assert [r["batch"] for r in ours["decode"]] == [r["batch"] for r in base["decode"]] == [1, 2]
    assert all(r["ms"] > 0 for r in ours["prefill"] + base["prefill"])
    assert all(r["tokens_per_s"] > 0 and r["gbs"] > 0 for r in ours["decode"])
    for kind in ("prefill_speedup", "decode_speedup"):
        assert all(ratio is not None and ratio > 0 for ratio in data["ratios"][kind].values())
    server = data["server"]
    assert server["output_tokens"] == server["requests"] * server["max_tokens"]
    assert server["ttft_ms"]["p50"] > 0 and server["itl_ms"]["p50"] > 0
    assert abs(data["sizing"]["allocated_over_planned"] - 1) < 0.05
    assert ours["kernels"] == "torch" and ours["cuda_graphs"] is False


def test_quick_run_times_mtp_speculation_as_is_and_with_a_guessing_head(quick_run):
    _, saved, _ = quick_run
    result = json.loads(saved.read_text())
    speculative = result["speculative"]
    plain = next(row["tokens_per_s"] for row in result["ours"]["decode"] if row["batch"] == 1)
    assert result["ratios"]["speculative_speedup"] == {
        key: pytest.approx(speculative[key]["tokens_per_s"] / plain) for key in ("as_is", "guessing_head")}
    as_is, guessing = speculative["as_is"], speculative["guessing_head"]
    for row in (as_is, guessing):
        assert row["speculative_tokens"] == 2 and row["tokens_per_s"] > 0 and row["steps"] == 3
        assert row["steps"] <= row["tokens"] <= 3 * row["steps"]  # 1 .. k + 1 tokens a step
    assert guessing["acceptance"] > as_is["acceptance"] and guessing["tokens"] > as_is["tokens"]


def test_usage_errors_exit_2():
    missing = run_cli("bench")
    assert missing.returncode == 2 and "--model" in missing.stderr
    shape = run_cli("bench", "--shape", "7b")
    assert shape.returncode == 2 and "0.8b" in shape.stderr
    drafts = run_cli("bench", "--shape", "0.8b", "--speculative-tokens", "12")
    assert drafts.returncode == 2 and "--speculative-tokens 12 is out of range" in drafts.stderr


def test_help_shows_examples():
    result = run_cli("bench", "--help")
    assert result.returncode == 0
    assert "qwen35 bench --shape 0.8b" in result.stdout
