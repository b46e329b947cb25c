"""Kernel tests: on a machine without a CUDA GPU the Triton kernels run in Triton's interpreter.

They run single-threaded: their tensors are small, and thread hand-offs on a shared 2-core
machine cost more than they save.

TRITON_INTERPRET is read when @triton.jit decorates a function, i.e. when a kernel module is
imported. This conftest is imported before the test modules beside it, so it sets the variable
first; if some earlier test package already imported a kernel module (decorated for a GPU that
is not there), that module is forgotten so the tests here import it afresh, interpreted.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


def _forget_compiled_kernel_modules() -> None:
    """Drop already-imported Triton kernel modules (and their parent's attribute) for a fresh import."""
    for name in [n for n in sys.modules if n.startswith("qwen35.runtime.kernels.")]:
        parent, _, child = name.rpartition(".")
        if child.startswith("triton"):
            del sys.modules[name]
            if parent in sys.modules and hasattr(sys.modules[parent], child):
                delattr(sys.modules[parent], child)


if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    _forget_compiled_kernel_modules()


@pytest.fixture
def device() -> torch.device:
    """Where kernel inputs live: the GPU when there is one, else the CPU (interpreter)."""
    return torch.device("cuda" if HAS_CUDA else "cpu")
