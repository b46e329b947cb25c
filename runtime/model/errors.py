"""Errors the runtime raises about a checkpoint on disk."""
from qwen35.planner.errors import InputError


class CheckpointError(InputError):
    """A checkpoint that cannot be found, read or matched to its config (bad input: exit 2)."""
