"""Which release of an engine a plan is rendered for."""
from __future__ import annotations

from importlib import metadata, util


def installed_version(distribution: str) -> str | None:
    """The installed release of a distribution (whose import name is the same), without importing it."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    # Metadata can outlive an uninstall that removed the files; find_spec looks without importing.
    return version if util.find_spec(distribution) is not None else None


def resolve_version(distribution: str, requested: str | None, newest_known: str) -> str:
    """Installed release if any, else the one asked for, else the newest known."""
    return installed_version(distribution) or requested or newest_known
