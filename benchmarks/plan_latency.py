"""Wall time of `qwen35 plan ... --json` as a user runs it, and whether it imports torch.

    python benchmarks/plan_latency.py [--runs 11]

Prints the machine's load, each command's median / min / max wall time, and the modules
that `python -X importtime` saw (torch must not be among them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# Each command with the exit code it must give: 0 a plan fits, 3 nothing fits (ways out re-planned).
COMMANDS = (
    (["plan", "--model", "Qwen3.5-397B-A17B", "--precision", "bf16", "--gpu", "H100:8", "--nodes", "2", "--json"], 0),
    (["plan", "--model", "Qwen3.5-9B", "--gpu", "H100:1", "--json"], 0),
    (["plan", "--model", "nvidia/Qwen3.5-397B-A17B-NVFP4", "--gpu", "B200:8", "--json"], 0),
    (["plan", "--model", "Qwen3.5-122B-A10B", "--gpu", "H100:3", "--json"], 3),
)


def time_command(args: list[str], expected_rc: int, runs: int) -> list[float]:
    """Wall seconds of each run of `qwen35 <args>`, which must exit with expected_rc."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "qwen35.launcher.cli", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != expected_rc:
            raise SystemExit(f"qwen35 {' '.join(args)} exited {done.returncode}, expected {expected_rc}: {done.stderr}")
    return times


def imports_torch(args: list[str]) -> bool:
    """True if running the command imports torch."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "qwen35.launcher.cli", *args],
                          capture_output=True, text=True)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def main() -> None:
    """Time each command and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<90} {'median':>7} {'min':>7} {'max':>7} torch")
    for args, expected_rc in COMMANDS:
        times = time_command(args, expected_rc, runs)
        label = "qwen35 " + " ".join(args)
        print(f"{label:<90} {statistics.median(times):7.3f} {min(times):7.3f} {max(times):7.3f} "
              f"{'yes' if imports_torch(args) else 'no'}")


if __name__ == "__main__":
    main()
