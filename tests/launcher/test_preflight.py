"""Preflight checks against real sockets, a fake installed package and a fake hub cache."""
from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from qwen35.launcher.preflight import (
    SOURCE_CACHED,
    SOURCE_DOWNLOAD,
    SOURCE_LOCAL,
    check_engine_installed,
    check_model_source,
    check_port_free,
    engine_version,
    port_in_use,
    port_owner,
)
from qwen35.planner.errors import InputError, Qwen35Error


@pytest.fixture
def listener():
    """A socket listening on an ephemeral 127.0.0.1 port, as a running server would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_free_port_is_not_in_use():
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    assert not port_in_use("0.0.0.0", port)
    check_port_free("127.0.0.1", port)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_taken_port_is_in_use(listener, host):
    assert port_in_use(host, listener)


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on this machine")
def test_dual_stack_any_address_sees_an_ipv4_listener(listener):
    assert port_in_use("::", listener)


def test_check_port_free_names_port_process_and_a_free_alternative(listener):
    with pytest.raises(InputError) as caught:
        check_port_free("0.0.0.0", listener)
    error = caught.value
    assert error.exit_code == 2
    assert f"port {listener}" in error.message
    assert f"pid {os.getpid()}" in error.message  # the listener belongs to this test process
    suggested = int(error.hint.rsplit("--port ", 1)[1])
    assert suggested != listener and not port_in_use("0.0.0.0", suggested)


def test_bound_but_not_listening_socket_counts_as_taken():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)


def test_port_owner_finds_the_listening_process(listener):
    assert port_owner(listener).startswith(f"pid {os.getpid()} (")
    assert port_owner(free_port()) is None


def test_host_that_is_not_ours_is_bad_input():
    with pytest.raises(InputError, match="not an address of this machine"):
        port_in_use("192.0.2.1", free_port())  # TEST-NET-1, never local


@pytest.fixture
def fake_sglang(tmp_path, monkeypatch):
    """An installed-looking sglang 0.5.9 whose import would fail loudly."""
    (tmp_path / "sglang-0.5.9.dist-info").mkdir()
    (tmp_path / "sglang-0.5.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sglang\nVersion: 0.5.9\n"
    )
    (tmp_path / "sglang").mkdir()
    (tmp_path / "sglang" / "__init__.py").write_text("raise RuntimeError('preflight imported sglang')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_engine_version_reads_metadata_without_importing(fake_sglang):
    assert engine_version("sglang") == "0.5.9"
    assert check_engine_installed("sglang") == "0.5.9"
    assert "sglang" not in sys.modules


def test_missing_engine_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # an environment with nothing installed
    assert engine_version("vllm") is None
    with pytest.raises(Qwen35Error) as caught:
        check_engine_installed("vllm")
    assert caught.value.exit_code == 1 and "pip install vllm" in caught.value.hint
    with pytest.raises(Qwen35Error) as caught:
        check_engine_installed("sglang")
    assert 'pip install "sglang[all]"' in caught.value.hint


def test_unknown_engine_is_bad_input():
    with pytest.raises(InputError, match="unknown engine"):
        engine_version("tgi")


def test_local_model_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}))
    assert check_model_source(str(tmp_path)) == SOURCE_LOCAL


def test_local_folder_without_config_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        check_model_source(str(tmp_path))


@pytest.mark.parametrize("model", ["./models/missing", "/nonexistent/qwen", "~/nope/Qwen3.5-9B", "a/b/c"])
def test_missing_local_path_is_bad_input(model):
    with pytest.raises(InputError, match="does not exist"):
        check_model_source(model)


def test_file_instead_of_folder_is_bad_input(tmp_path):
    (tmp_path / "model.bin").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        check_model_source(str(tmp_path / "model.bin"))


def make_cached_model(cache_dir, repo_id: str, files: list[str]) -> None:
    """Lay out a model the way huggingface_hub's cache stores it."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")


def test_hub_id_in_cache(tmp_path):
    make_cached_model(tmp_path, "Qwen/Qwen3.5-0.8B", ["config.json", "model.safetensors"])
    assert check_model_source("Qwen/Qwen3.5-0.8B", cache_dir=tmp_path) == SOURCE_CACHED


def test_hub_id_with_only_a_config_in_cache_will_download(tmp_path):
    make_cached_model(tmp_path, "Qwen/Qwen3.5-9B", ["config.json"])
    assert check_model_source("Qwen/Qwen3.5-9B", cache_dir=tmp_path) == SOURCE_DOWNLOAD


def test_hub_id_not_in_cache_will_download(tmp_path):
    assert check_model_source("Qwen/Qwen3.5-27B", cache_dir=tmp_path) == SOURCE_DOWNLOAD


def test_invalid_hub_id_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="valid hub id"):
        check_model_source("Qwen/bad id!", cache_dir=tmp_path)
