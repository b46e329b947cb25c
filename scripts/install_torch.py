"""Install the torch build this machine wants into a virtual environment, and say which one it got.

Run by `make` before qwen35 itself is installed, so it uses the standard library only. PyPI's
Linux torch wheels are CUDA builds that pull several GB of CUDA libraries; the CPU build lives on
PyTorch's own index. So: without a visible NVIDIA GPU the CPU build comes from that index; where
the index cannot be reached, torch comes from the configured package index instead (a local
mirror, or PyPI's CUDA build) and this says so; with a GPU, or asked for `cuda`, the CUDA build
comes from PyPI or the given CUDA index. Either way the last line names the build installed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BUILDS = ("auto", "cpu", "cuda")
PROBE_TIMEOUT_S = 5.0  # pip's own retries against a dead index take minutes
_REPORT = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"


def say(message: str) -> None:
    """Progress for the person running make (stderr keeps it apart from pip's own output)."""
    print(f"==> {message}", file=sys.stderr, flush=True)


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU: `nvidia-smi -L` lists one."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def index_reachable(index: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the package index answers its torch page within `timeout_s`."""
    try:
        with urllib.request.urlopen(index.rstrip("/") + "/torch/", timeout=timeout_s) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def installed_torch(python: str) -> tuple[str, str | None] | None:
    """(version, CUDA version or None) of the torch that `python` imports, or None when it has none."""
    done = subprocess.run([python, "-c", _REPORT], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    version, cuda = json.loads(done.stdout.strip().splitlines()[-1])
    return version, cuda


def describe(version: str, cuda: str | None) -> str:
    """'torch 2.13.0+cpu, the CPU build' or 'torch 2.13.0, a CUDA 12.8 build'."""
    return f"torch {version}, " + (f"a CUDA {cuda} build" if cuda else "the CPU build")


def pip_arguments(build: str, version: str, cpu_index: str, cuda_index: str | None,
                  reachable) -> tuple[list[str], str]:
    """The `pip install` arguments for `build` ('cpu' or 'cuda'), and what to tell the user first."""
    requirement = f"torch=={version}"
    if build == "cuda":
        if cuda_index:
            return ["install", requirement, "--index-url", cuda_index], f"installing {requirement}, CUDA build, from {cuda_index}"
        return ["install", requirement], f"installing {requirement}, CUDA build, from the configured index (PyPI: several GB)"
    if reachable(cpu_index):
        return ["install", requirement, "--index-url", cpu_index], f"installing {requirement}, CPU build, from {cpu_index}"
    return (["install", requirement],
            f"{cpu_index} is not reachable: installing {requirement} from the configured index instead "
            "(a local mirror may hold the CPU build; plain PyPI's is the CUDA build, several GB); "
            "point TORCH_CPU_INDEX at a mirror of the CPU index to avoid that")


def install(python: str, build: str, version: str, cpu_index: str, cuda_index: str | None = None,
            reachable=index_reachable, gpu=gpu_visible) -> int:
    """Install torch for `python` unless a build of `version` is there already; return pip's exit code."""
    present = installed_torch(python)
    if present is not None and present[0].split("+")[0] == version:
        say(f"{describe(*present)} is already installed")
        return 0
    chosen = build if build != "auto" else ("cuda" if gpu() else "cpu")
    if build == "auto":
        say(f"{'an NVIDIA GPU is' if chosen == 'cuda' else 'no NVIDIA GPU is'} visible: the {chosen.upper()} build of torch "
            "(make TORCH=cpu or TORCH=cuda chooses)")
    arguments, message = pip_arguments(chosen, version, cpu_index, cuda_index, reachable)
    say(message)
    code = subprocess.run([python, "-m", "pip", *arguments, "--progress-bar", "on"]).returncode
    if code != 0:
        say(f"pip could not install torch=={version} (exit code {code}); see its message above")
        return code
    got = installed_torch(python)
    if got is None:
        say("torch was installed but does not import; see the messages above")
        return 1
    wanted_cpu = chosen == "cpu"
    note = "" if (got[1] is None) == wanted_cpu else f" (the {chosen.upper()} build was wanted)"
    say(f"installed {describe(*got)}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: see --help."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", choices=BUILDS, default="auto", help="auto: cuda where nvidia-smi lists a GPU, else cpu")
    parser.add_argument("--version", required=True, help="torch release, e.g. 2.13.0")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help="package index holding the CPU build")
    parser.add_argument("--cuda-index", default="", help="package index for the CUDA build (default: the configured one)")
    parser.add_argument("--python", default=sys.executable, help="the environment's python (default: this one)")
    args = parser.parse_args(argv)
    return install(args.python, args.build, args.version, args.cpu_index, args.cuda_index or None)


if __name__ == "__main__":
    sys.exit(main())
