"""Checks before a launch: the port is free, the engine is installed, the model can be found.

Each check either returns quietly or raises an error that says what to do; `check_model_source`
returns how the model will be obtained so the CLI can warn about a download.
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from qwen35.planner.engines.versions import installed_version
from qwen35.planner.errors import InputError, Qwen35Error

ENGINE_PACKAGES = {"sglang": "sglang", "vllm": "vllm"}  # engine name -> distribution name
INSTALL_COMMANDS = {"sglang": 'pip install "sglang[all]"', "vllm": "pip install vllm"}

SOURCE_LOCAL = "local"  # a directory holding config.json
SOURCE_CACHED = "cached"  # a hub id whose config and weight index are in the local HF cache
SOURCE_DOWNLOAD = "download"  # a hub id the engine will download at start

_WEIGHT_ENTRY_FILES = ("model.safetensors.index.json", "model.safetensors")
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"  # socket state in /proc/net/tcp; sockets bound but not listening are not listed


def _bind_targets(host: str, port: int) -> list[tuple[int, tuple]]:
    if host in ("", "0.0.0.0"):
        return [(socket.AF_INET, ("0.0.0.0", port))]
    if host == "::":
        return [(socket.AF_INET6, ("::", port, 0, 0))]
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InputError(
            f"cannot resolve host {host!r}: {error.strerror}",
            "use an IP address such as 127.0.0.1 or 0.0.0.0",
        ) from error
    targets = []
    for family, _, _, _, address in infos:
        if (family, address) not in targets:
            targets.append((family, address))
    return targets


def port_in_use(host: str, port: int) -> bool:
    """Whether an engine could not bind `host:port` because something else holds it."""
    for family, address in _bind_targets(host, port):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if host == "::":  # no IPv6 here: the engine would fall back to IPv4
                return port_in_use("0.0.0.0", port)
            raise
        with sock:
            # Engines set SO_REUSEADDR, so connections in TIME_WAIT do not block them either.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address[0] == "::":
                # "::" is dual-stack for engines, so an IPv4 listener on the port conflicts too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
                if error.errno == errno.EADDRNOTAVAIL:
                    raise InputError(
                        f"{host} is not an address of this machine",
                        "use 0.0.0.0 (all interfaces) or 127.0.0.1",
                    ) from error
                if error.errno == errno.EACCES:
                    raise InputError(
                        f"port {port} needs root privileges",
                        "use a port above 1023, e.g. --port 30000",
                    ) from error
                raise
    return False


def listening_sockets(port: int) -> set[str] | None:
    """The sockets ("socket:[INODE]") listening on TCP `port` here, or None where /proc/net/tcp is unreadable."""
    inodes, readable = set(), False
    for table in _TCP_TABLES:
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            # sl local_address rem_address st ... inode; addresses are HEX_IP:HEX_PORT
            fields = row.split()
            if len(fields) < 10 or fields[3] != _LISTEN or fields[9] == "0":
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes if readable else None


def socket_holders(inodes: set[str]) -> list[int]:
    """Pids of the visible processes holding any of `inodes` (another user's processes stay hidden)."""
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
        except OSError:
            continue  # gone, or another user's process
    return holders


def describe_process(pid: int) -> str:
    """"pid 123 (python -m http.server)": a pid with the start of its command line."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"pid {pid} ({command[:80] or '?'})"


def port_owner(port: int) -> str | None:
    """Describe the local process holding TCP `port` ("pid 123 (python -m ...)"), if visible."""
    inodes = listening_sockets(port)
    holders = socket_holders(inodes) if inodes else []
    return describe_process(holders[0]) if holders else None


def _next_free_port(host: str, port: int) -> int | None:
    for candidate in range(port + 1, min(port + 100, 65536)):
        if not port_in_use(host, candidate):
            return candidate
    return None


def check_port_free(host: str, port: int) -> None:
    """Raise InputError naming the port, and its holder if visible, when `host:port` is taken."""
    if not port_in_use(host, port):
        return
    owner = port_owner(port)
    where = f"port {port} on {host or '0.0.0.0'} is already in use"
    if owner:
        where += f" by {owner}"
    free = _next_free_port(host, port)
    choice = f"--port {free}" if free else "--port N with another port"
    raise InputError(where, f"stop that process or choose another port: {choice}")


def engine_version(engine: str) -> str | None:
    """The installed version of `engine` ("sglang" or "vllm"), found without importing it."""
    if engine not in ENGINE_PACKAGES:
        choices = ", ".join(ENGINE_PACKAGES)
        raise InputError(f"unknown engine {engine!r}", f"choose one of: {choices}")
    return installed_version(ENGINE_PACKAGES[engine])


def check_engine_installed(engine: str) -> str:
    """Return the engine's version; raise Qwen35Error with the install command if missing."""
    version = engine_version(engine)
    if version is None:
        raise Qwen35Error(
            f"{engine} is not installed in this Python environment",
            f"install it with: {INSTALL_COMMANDS[engine]}",
        )
    return version


def _looks_local(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything path-shaped beyond that is meant as a path.
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def check_model_source(model: str, cache_dir: str | Path | None = None) -> str:
    """How the model will be found: SOURCE_LOCAL, SOURCE_CACHED or SOURCE_DOWNLOAD (warn)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"{path} has no config.json",
                "point --model at a Hugging Face model folder or use a hub id like Qwen/Qwen3.5-9B",
            )
        return SOURCE_LOCAL
    if path.exists() or _looks_local(model):
        what = "is not a folder" if path.exists() else "does not exist"
        raise InputError(
            f"model path {model} {what}",
            "give a model folder with config.json or a hub id like Qwen/Qwen3.5-9B",
        )
    # Imported here: huggingface_hub is slow to import and only this check needs it.
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    def cached(filename: str) -> bool:
        found = try_to_load_from_cache(model, filename, cache_dir=cache_dir)
        return isinstance(found, str)

    try:
        in_cache = cached("config.json") and any(cached(name) for name in _WEIGHT_ENTRY_FILES)
    except HFValidationError as error:
        raise InputError(
            f"{model!r} is neither a model folder nor a valid hub id",
            "use a hub id like Qwen/Qwen3.5-9B",
        ) from error
    if in_cache:
        return SOURCE_CACHED
    if constants.HF_HUB_OFFLINE:
        raise InputError(
            f"{model} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
            f"download it first (hf download {model}) or unset HF_HUB_OFFLINE",
        )
    return SOURCE_DOWNLOAD
