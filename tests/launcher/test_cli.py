"""The `qwen35` entry point as a user first meets it: --version, -h, and bad ports as one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

QWEN35 = [sys.executable, "-m", "qwen35.launcher.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("QWEN35_DEBUG", None)
    return subprocess.run([*QWEN35, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_release(flag):
    done = run(flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"qwen35 {metadata.version('qwen35')} (Python ")


@pytest.mark.parametrize("args", [["-h"], ["plan", "-h"], ["launch", "-h"]])
def test_short_help_is_the_same_as_long_help(args):
    short, long = run(*args), run(*args[:-1], "--help")
    assert short.returncode == 0 and short.stdout == long.stdout
    assert "Usage: " in short.stdout and "--help" in short.stdout


@pytest.mark.parametrize("command", ["plan", "launch"])
@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_a_port_outside_the_tcp_range_is_one_line_and_exit_2(command, port):
    done = run(command, "--model", "Qwen3.5-9B", "--gpu", "H100:1", f"--port={port}", "--dry-run"
               if command == "launch" else "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"error: --port {port} is not a TCP port (expected 1 to 65535); choose a free port " \
                          "such as --port 30000 (serving.port in a profile)\n"
    assert done.stdout == ""


@pytest.mark.parametrize("tolerance", ["-1", "100"])
def test_a_plan_tolerance_that_is_no_percentage_is_bad_usage(tolerance):
    done = run("launch", "--model", "Qwen3.5-9B", "--gpu", "H100:1", f"--plan-tolerance={tolerance}")
    assert done.returncode == 2
    assert done.stderr == f"error: --plan-tolerance {tolerance} is not a percentage below 100; try --plan-tolerance 5\n"
