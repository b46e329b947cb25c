"""One module per engine: its limits, sizing and command line (the solver names none of them)."""
from __future__ import annotations


def engine_module(name: str):
    """The module that owns engine `name` (one of planner.plan.ENGINES)."""
    from qwen35.planner.engines import bundled, sglang, vllm

    return {"sglang": sglang, "vllm": vllm, "bundled": bundled}[name]
