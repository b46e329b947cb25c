"""Decode steps captured as CUDA graphs at fixed batch sizes; batches are padded up to the next size.

A decode step is hundreds of small launches (about fifteen per layer): replaying a graph
removes the per-launch CPU cost, which at batch 1 is most of the step. Every graph reads one
static input buffer [5, max_batch] (token, cache position, row, flat KV slot, rotary position
per entry) and writes its own logits tensor; all graphs share one memory pool, captured
largest first. Padding
entries point at the runner's padding row (state slot -1, block table on the scratch page) and
write their K/V into the scratch page, so they change nothing real. On the CPU nothing is
captured and the runner runs eagerly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def graph_batch_sizes(max_batch: int, sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES) -> list[int]:
    """The capture sizes up to max_batch, max_batch itself included so every batch has a graph."""
    chosen = [s for s in sizes if s < max_batch]
    return chosen + [max_batch]


class DecodeGraphs:
    """CUDA graphs of run(inputs[:, :size]) for each size; replay(size) gives that graph's logits."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, sizes: list[int]):
        if inputs.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.run = run
        self.inputs = inputs
        self.sizes = sorted(sizes)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def capture(self, warmup_runs: int = 2) -> None:
        """Warm up (compiles the Triton kernels) and capture every size, largest first, one shared pool."""
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup_runs):
                for size in self.sizes:
                    self.run(self.inputs[:, :size])
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        for size in sorted(self.sizes, reverse=True):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self.run(self.inputs[:, :size])
            pool = graph.pool() if pool is None else pool
            self.graphs[size] = graph
        torch.cuda.synchronize()

    def padded_size(self, batch: int) -> int | None:
        """The smallest captured size that holds batch entries (None: run eagerly)."""
        for size in self.sizes:
            if size >= batch:
                return size
        return None

    def replay(self, size: int) -> torch.Tensor:
        """Replay the size's graph over the current inputs; its logits [size, V] (overwritten next replay)."""
        self.graphs[size].replay()
        return self.outputs[size]
