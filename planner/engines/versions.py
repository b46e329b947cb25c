"""Which release of an engine a plan is rendered for."""
from __future__ import annotations

from importlib import metadata


def installed_version(distribution: str) -> str | None:
    """The installed release of a distribution, read from package metadata without importing it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def resolve_version(distribution: str, requested: str | None, newest_known: str) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return installed_version(distribution) or requested or newest_known
