"""scripts/install_torch.py, run by `make`: the CPU build without a GPU, a said fallback, and the build named.

A stand-in for the environment's python records the pip commands and answers the torch report,
so no test downloads anything.
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_torch.py"
spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
install_torch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_torch)

FAKE_PYTHON = """#!/bin/sh
# -c: the torch report, once pip "installed" it; -m pip ...: recorded, and torch appears.
if [ "$1" = "-c" ]; then
  [ -f {state}/torch.json ] && cat {state}/torch.json && exit 0
  exit 1
fi
echo "$@" >> {state}/pip.log
cp {state}/after-install.json {state}/torch.json
"""


@pytest.fixture
def python(tmp_path):
    """The stand-in python; `installs(report)` sets what torch reports after pip runs."""
    path = tmp_path / "python"
    path.write_text(FAKE_PYTHON.format(state=tmp_path))
    path.chmod(0o755)

    def installs(version: str, cuda: str | None) -> None:
        (tmp_path / "after-install.json").write_text(json.dumps([version, cuda]))

    def pip_calls() -> list[str]:
        log = tmp_path / "pip.log"
        return log.read_text().splitlines() if log.exists() else []

    return path, installs, pip_calls


CPU_INDEX = "https://cpu.index.example/whl/cpu"


def test_without_a_gpu_the_cpu_build_comes_from_the_cpu_index(python, capsys):
    path, installs, pip_calls = python
    installs("2.13.0+cpu", None)
    code = install_torch.install(str(path), "auto", "2.13.0", CPU_INDEX, reachable=lambda url: True, gpu=lambda: False)
    assert code == 0
    assert pip_calls() == [f"-m pip install torch==2.13.0 --index-url {CPU_INDEX} --progress-bar on"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("==> no NVIDIA GPU is visible: the CPU build of torch")
    assert err[-1] == "==> installed torch 2.13.0+cpu, the CPU build"


def test_an_unreachable_cpu_index_falls_back_to_the_configured_one_and_says_what_it_got(python, capsys):
    path, installs, pip_calls = python
    installs("2.13.0", "12.8")  # plain PyPI: the CUDA wheel
    code = install_torch.install(str(path), "cpu", "2.13.0", CPU_INDEX, reachable=lambda url: False, gpu=lambda: False)
    assert code == 0
    assert pip_calls() == ["-m pip install torch==2.13.0 --progress-bar on"]
    err = capsys.readouterr().err
    assert f"==> {CPU_INDEX} is not reachable: installing torch==2.13.0 from the configured index instead" in err
    assert err.splitlines()[-1] == "==> installed torch 2.13.0, a CUDA 12.8 build (the CPU build was wanted)"


@pytest.mark.parametrize("cuda_index, extra", [(None, []), ("https://x.example/cu128", ["--index-url", "https://x.example/cu128"])])
def test_with_a_gpu_the_cuda_build(python, capsys, cuda_index, extra):
    path, installs, pip_calls = python
    installs("2.13.0", "12.8")
    probed = []
    code = install_torch.install(str(path), "auto", "2.13.0", CPU_INDEX, cuda_index,
                                 reachable=lambda url: probed.append(url) or True, gpu=lambda: True)
    assert code == 0 and probed == []
    assert pip_calls() == [" ".join(["-m pip install torch==2.13.0", *extra, "--progress-bar on"])]
    assert capsys.readouterr().err.splitlines()[-1] == "==> installed torch 2.13.0, a CUDA 12.8 build"


def test_an_installed_build_of_the_release_is_kept(python, tmp_path, capsys):
    path, installs, pip_calls = python
    (tmp_path / "torch.json").write_text(json.dumps(["2.13.0+cpu", None]))
    assert install_torch.install(str(path), "auto", "2.13.0", CPU_INDEX, gpu=lambda: True) == 0
    assert pip_calls() == []
    assert "torch 2.13.0+cpu, the CPU build is already installed" in capsys.readouterr().err


def test_the_index_probe_answers_quickly_both_ways():
    class TorchPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TorchPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert install_torch.index_reachable(f"http://127.0.0.1:{server.server_port}/whl/cpu")
        assert not install_torch.index_reachable(f"http://127.0.0.1:{server.server_port}/nothing")
    finally:
        server.shutdown()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not install_torch.index_reachable(f"http://127.0.0.1:{closed}/whl/cpu", timeout_s=2)


def test_make_installs_torch_with_the_script_before_qwen35(tmp_path):
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "-n", "-B", f"VENV={venv}", f"{venv}/.installed"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    torch_step = next(i for i, line in enumerate(lines) if "scripts/install_torch.py" in line)
    assert "--build auto --version 2.13.0" in lines[torch_step]
    assert '--cpu-index "https://download.pytorch.org/whl/cpu"' in " ".join(lines[torch_step:torch_step + 2])
    install_step = next(i for i, line in enumerate(lines) if line.endswith("pip install --progress-bar on -e ."))
    assert torch_step < install_step
