"""The torch and Triton kernel sets are interchangeable: every op takes the same arguments in both.

The layers call kernels.op(...) without knowing which set they hold, so a call written against
one must run on the other: each reference parameter appears in its Triton twin at the same
position, with the same kind and default. A Triton kernel may add optional parameters after
them (out buffers, tile sizes) that no layer passes; the references may add math knobs that
the kernels fix (REFERENCE_ONLY).
"""
import dataclasses
import inspect

import pytest

pytest.importorskip("triton")

from qwen35.runtime.kernels.kernel_set import (  # noqa: E402
    KERNEL_CHOICES,
    KernelSet,
    select_kernels,
    torch_kernels,
    triton_kernels,
)

# The reference's chunk size is a knob of its chunked form; the Triton prefill fixes its own (64).
REFERENCE_ONLY = {"gdr_prefill": {"chunk_size"}}
OPS = [f.name for f in dataclasses.fields(KernelSet) if f.name != "name"]


def parameters(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("op", OPS)
def test_reference_and_kernel_take_the_same_arguments(op):
    reference, kernel = getattr(torch_kernels(), op), getattr(triton_kernels(), op)
    assert reference.__module__.endswith(".reference"), reference.__module__
    assert ".triton" in kernel.__module__, kernel.__module__
    shared = [p for p in parameters(reference) if p[0] not in REFERENCE_ONLY.get(op, ())]
    assert parameters(kernel)[:len(shared)] == shared
    assert all(p.default is not p.empty for p in list(inspect.signature(kernel).parameters.values())[len(shared):])
    # The reference-only knobs have defaults, so a call without them means the same on both sides.
    assert all(inspect.signature(reference).parameters[name].default is not inspect.Parameter.empty
               for name in REFERENCE_ONLY.get(op, ()))


def test_select_kernels():
    assert select_kernels("cpu").name == "torch"
    assert select_kernels("cuda").name == "triton"
    assert select_kernels("cpu", "triton").name == "triton"
    assert select_kernels("cuda", "torch").name == "torch"
    assert set(KERNEL_CHOICES) == {"auto", "triton", "torch"}
    with pytest.raises(ValueError, match="unknown kernel set"):
        select_kernels("cpu", "cuda")
