"""The profiles that ship with qwen35 (package data of `qwen35.profiles`), found by name."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def shipped_dir() -> Path:
    """The directory holding the shipped *.yaml profiles."""
    return Path(str(resources.files("qwen35.profiles")))


def shipped_names() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    return sorted(path.stem for path in shipped_dir().glob(f"*{SUFFIX}"))


def shipped_path(name: str) -> Path | None:
    """The file of a shipped profile named `name` (with or without .yaml), or None."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not stem or "/" in stem or "\\" in stem:
        return None
    path = shipped_dir() / f"{stem}{SUFFIX}"
    return path if path.is_file() else None


def find_profile(spec: str) -> Path:
    """A profile file path, or a shipped profile name; InputError naming the shipped ones if neither."""
    from qwen35.planner.errors import InputError

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_path(spec)
    if shipped is None:
        raise InputError(f"no profile file or shipped profile named '{spec}'",
                         f"shipped profiles: {', '.join(shipped_names())}")
    return shipped
