"""Checks the launcher tests share about processes that must be gone."""
import os

import pytest


def assert_gone(pgid: int, *pids: int) -> None:
    """No member of the group is left, not even a zombie, and neither are the given pids."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
