"""Which release of an engine a plan is rendered for."""
from __future__ import annotations

from importlib import metadata, util

from qwen35.planner.errors import InputError


def installed_version(distribution: str) -> str | None:
    """The installed release of a distribution (whose import name is the same), without importing it."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    # Metadata can outlive an uninstall that removed the files; find_spec looks without importing.
    return version if util.find_spec(distribution) is not None else None


def parse_version(text: str) -> tuple[int, ...]:
    """'0.5.10.post1' -> (0, 5, 10): the numeric release part, for ordering."""
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def resolve_version(distribution: str, requested: str | None, newest_known: str, oldest_supported: str) -> str:
    """Installed release if any, else the one asked for, else the newest known; refused below the oldest supported."""
    installed = installed_version(distribution)
    version = installed or requested or newest_known
    release = parse_version(version)
    if not release:
        raise InputError(f"--engine-version {version!r} is not a release number", f"give one such as {newest_known}")
    if release < parse_version(oldest_supported):
        where = "the installed" if installed else "the requested"
        raise InputError(f"{distribution} {version} ({where} release) is older than "
                         f"{distribution} {oldest_supported}, the first release qwen35 plans Qwen3.5 for",
                         f"install {distribution}>={oldest_supported} or pass --engine-version {newest_known}")
    return version
