"""The figures an engine decides at start-up, read from its log and held against the plan.

Engines size their pools when they start and say so only in their logs. Each pattern below
matches one start-up line as the supported releases write it; the `source` beside it is the
literal text of the releases' format string (tests/launcher/test_startup_figures.py finds it in
each supported release's own files), so a release that rewords a line fails a test instead of
silently reading nothing.

- SGLang 0.5.13.post1, 0.5.19, 0.5.20, 0.5.23: the scheduler's `max_total_num_tokens=...,
  max_running_requests=..., context_len=...` line, `Mamba Cache is allocated.
  max_mamba_cache_size: N` from the memory pool, `mem_fraction_static` in the logged server
  arguments (a dataclass repr up to 0.5.13.post1, a dict from 0.5.19), `Load weight end.` and
  the CUDA graph capture's `... graph end.`.
- vLLM 0.33.0: `GPU KV cache size: N tokens, Maximum concurrency for L tokens per request: Xx`,
  the `non-default args: {...}` dict (max_num_seqs, gpu_memory_utilization), `Model loading
  took`, `Graph capturing finished in`.
- The bundled runtime (`qwen35 serve`): its `serving MODEL (..., context N, M concurrent)` and
  `pools: S state slots, T KV tokens` banner lines.

The reader is fed every log line from the supervisor's reader thread; `figures()` may be read
from any thread.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

KV_TOKENS = "kv_tokens"
STATE_SLOTS = "state_slots"
RUNNING_REQUESTS = "running_requests"
CONTEXT_LENGTH = "context_length"
MEMORY_FRACTION = "memory_fraction"
FULL_CONTEXT_REQUESTS = "full_context_requests"
LABELS = {KV_TOKENS: "KV tokens", STATE_SLOTS: "state slots", RUNNING_REQUESTS: "running requests",
          CONTEXT_LENGTH: "context length", FULL_CONTEXT_REQUESTS: "full-context requests",
          MEMORY_FRACTION: "memory fraction"}
# A figure below the plan shrinks the deployment; a different memory fraction only explains one.
SHORTFALL_FIGURES = (KV_TOKENS, STATE_SLOTS, RUNNING_REQUESTS, CONTEXT_LENGTH, FULL_CONTEXT_REQUESTS)

WEIGHTS_LOADED, GRAPHS_CAPTURED, SERVING = "weights loaded", "graphs captured", "serving"
DEFAULT_TOLERANCE = 0.05


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class LinePattern:
    """One start-up line: the figures its groups hold, or the phase it marks."""

    regex: re.Pattern
    figures: tuple[str, ...] = ()  # group i+1 holds figures[i]
    phase: str | None = None
    source: tuple[str, ...] = ()  # the format string's literal text, as in each release's files


_SGLANG = (
    LinePattern(re.compile(r"max_total_num_tokens=(\d+), chunked_prefill_size=-?\w+, max_prefill_tokens=\d+, "
                           r"max_running_requests=(\d+), context_len=(\d+)"),
                (KV_TOKENS, RUNNING_REQUESTS, CONTEXT_LENGTH),
                source=('f"max_total_num_tokens={self.max_total_num_tokens}, "',
                        'f"max_running_requests={self.max_running_requests}, "',
                        'f"context_len={self.model_config.context_len}, "')),
    LinePattern(re.compile(r"Mamba Cache is allocated\. max_mamba_cache_size: (\d+),"), (STATE_SLOTS,),
                source=('f"Mamba Cache is allocated. "', 'f"max_mamba_cache_size: {size}, "')),
    # server_args=ServerArgs(..., mem_fraction_static=0.835, ...) or server_args={..., 'mem_fraction_static': 0.835}
    LinePattern(re.compile(r"server_args=.*?\bmem_fraction_static(?:=|': )([0-9.]+)"), (MEMORY_FRACTION,),
                source=("server_args=",)),
    LinePattern(re.compile(r"Load weight end\."), phase=WEIGHTS_LOADED, source=('"Load weight end. "',)),
    LinePattern(re.compile(r"Capture (?:[\w ]+ )?(?:cuda|CUDA) graph end\."), phase=GRAPHS_CAPTURED,
                source=(" graph end. ",)),
)
_VLLM = (
    LinePattern(re.compile(r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
                           r"([\d.]+)x"), (KV_TOKENS, CONTEXT_LENGTH, FULL_CONTEXT_REQUESTS),
                source=('"%s KV cache size: %s tokens, "', '"Maximum concurrency for %s tokens per request: %.2fx"')),
    LinePattern(re.compile(r"non-default args: .*'max_num_seqs': (\d+)"), (RUNNING_REQUESTS,),
                source=('"non-default args: %s"',)),
    LinePattern(re.compile(r"non-default args: .*'gpu_memory_utilization': ([0-9.]+)"), (MEMORY_FRACTION,),
                source=('"non-default args: %s"',)),
    LinePattern(re.compile(r"Model loading took "), phase=WEIGHTS_LOADED,
                source=('"Model loading took %s GiB memory and %.6f seconds"',)),
    LinePattern(re.compile(r"Graph capturing finished in "), phase=GRAPHS_CAPTURED,
                source=('"Graph capturing finished in %.0f secs, took %.2f GiB"',)),
)
# The bundled runtime's banner (launcher/commands/serve.py); checked by launching it for real.
_BUNDLED = (
    LinePattern(re.compile(r"serving \S+ \(.*?, context (\d+), (\d+) concurrent\) at "),
                (CONTEXT_LENGTH, RUNNING_REQUESTS), phase=WEIGHTS_LOADED),
    LinePattern(re.compile(r"pools: (\d+) state slots, (\d+) KV tokens in pages of"), (STATE_SLOTS, KV_TOKENS)),
)
PATTERNS = {"sglang": _SGLANG, "vllm": _VLLM, "bundled": _BUNDLED}
# What each engine's log states: the reader is complete once it has read all of them.
REPORTED = {engine: tuple(dict.fromkeys(name for pattern in patterns for name in pattern.figures))
            for engine, patterns in PATTERNS.items()}


@dataclass
class EngineFigures:
    """What the engine said at start-up: figures by name, and seconds from launch to each phase."""

    values: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)


class StartupReader:
    """Collects an engine's start-up figures from its log lines; the first value of each wins."""

    def __init__(self, engine: str, clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self._patterns = PATTERNS[engine]
        self._clock = clock
        self._started = clock()
        self._figures = EngineFigures()
        self._changed = threading.Condition()

    def feed(self, line: str) -> None:
        """Read one log line (any prefix the engine's logger adds is fine)."""
        for pattern in self._patterns:
            match = pattern.regex.search(line)
            if match is None:
                continue
            with self._changed:
                for name, text in zip(pattern.figures, match.groups()):
                    value = _number(text)
                    # vLLM states concurrency at full length as a ratio (3.23x): whole requests, as planned.
                    self._figures.values.setdefault(name, math.floor(value) if name == FULL_CONTEXT_REQUESTS else value)
                if pattern.phase:
                    # Graphs are captured in several rounds (decode, prefill, draft): the last counts.
                    if pattern.phase == GRAPHS_CAPTURED or pattern.phase not in self._figures.phases:
                        self._figures.phases[pattern.phase] = self._clock() - self._started
                self._changed.notify_all()

    def mark_serving(self) -> None:
        """Record the moment the engine answered the readiness probe."""
        with self._changed:
            self._figures.phases[SERVING] = self._clock() - self._started

    def wait_complete(self, timeout_s: float) -> EngineFigures:
        """The figures once every one this engine reports has been read, or whatever is there after `timeout_s`."""
        # The lines precede the engine's first answer, but the log reader may still be behind.
        with self._changed:
            self._changed.wait_for(lambda: all(name in self._figures.values for name in REPORTED[self.engine]),
                                   timeout=timeout_s)
            return self.figures()

    def figures(self) -> EngineFigures:
        """A copy of what has been read so far."""
        with self._changed:
            return EngineFigures(dict(self._figures.values), dict(self._figures.phases))


@dataclass(frozen=True)
class FigureCheck:
    """One row of the plan-vs-engine table."""

    name: str
    planned: float | None
    engine: float | None
    hint: str = ""  # the likely cause and the flag that fixes it, when off by more than the tolerance

    @property
    def difference(self) -> float | None:
        """(engine - plan) / plan, when both are known and the plan's is not zero."""
        if self.planned is None or self.engine is None or self.planned == 0:
            return None
        return (self.engine - self.planned) / self.planned

    def off(self, tolerance: float) -> bool:
        """Whether the engine's figure differs from the plan's by more than `tolerance`."""
        return self.difference is not None and abs(self.difference) > tolerance

    def short(self, tolerance: float) -> bool:
        """Whether the engine came up more than `tolerance` below the plan on a figure that sizes the deployment."""
        return self.name in SHORTFALL_FIGURES and self.difference is not None and self.difference < -tolerance

    def to_dict(self, tolerance: float) -> dict:
        """Plain data for the --json event."""
        return {"figure": self.name, "plan": self.planned, "engine": self.engine, "difference": self.difference,
                "off": self.off(tolerance), "hint": self.hint if self.off(tolerance) else ""}


# Why an engine's figure departs from the plan, and the flag that sets it, per engine.
_CAUSES = {
    "sglang": {
        KV_TOKENS: "SGLang found less free GPU memory after the weights than planned (another process on the GPU, "
                   "a larger activation or CUDA graph reserve); --mem-fraction-static sets its share",
        STATE_SLOTS: "SGLang split the pool between linear-attention state and KV differently; "
                     "--mamba-full-memory-ratio sets the split",
        RUNNING_REQUESTS: "SGLang capped concurrency by its KV tokens and state slots (48 with speculative "
                          "decoding); --max-running-requests sets it",
        CONTEXT_LENGTH: "SGLang took another context length (the checkpoint's limit, or a reduced one); "
                        "--context-length sets it",
        MEMORY_FRACTION: "another static memory fraction than planned; --mem-fraction-static sets it",
    },
    "vllm": {
        KV_TOKENS: "vLLM found less free GPU memory after the weights and its profiling run than planned; "
                   "--gpu-memory-utilization sets its share",
        CONTEXT_LENGTH: "vLLM took another model length; --max-model-len sets it",
        FULL_CONTEXT_REQUESTS: "the KV cache holds fewer full-length requests than planned; raise "
                               "--gpu-memory-utilization or lower --max-model-len",
        RUNNING_REQUESTS: "vLLM runs another number of sequences; --max-num-seqs sets it",
        MEMORY_FRACTION: "another memory utilization than planned; --gpu-memory-utilization sets it",
    },
    "bundled": {
        KV_TOKENS: "qwen35 serve sized its KV pages differently; --max-model-len and --max-running-requests set them",
        STATE_SLOTS: "qwen35 serve holds one state slot per running request; --max-running-requests sets them",
        RUNNING_REQUESTS: "--max-running-requests sets it",
        CONTEXT_LENGTH: "--max-model-len sets it",
    },
}


def planned_figures(plan) -> dict[str, float | None]:
    """What the plan states for each figure, read through the plan's public fields."""
    return {
        KV_TOKENS: plan.memory.get("kv_tokens"),
        STATE_SLOTS: plan.memory.get("state_slots"),
        RUNNING_REQUESTS: plan.max_running_requests,
        CONTEXT_LENGTH: plan.context_length,
        FULL_CONTEXT_REQUESTS: plan.full_context_requests,
        MEMORY_FRACTION: plan.mem_fraction_static or None,  # 0.0: a CPU plan states none
    }


def compare(plan, figures: EngineFigures, engine: str) -> list[FigureCheck]:
    """One row per figure the plan or the engine states (each engine reports its own subset)."""
    planned = planned_figures(plan)
    rows = []
    for name in LABELS:
        mine, theirs = planned.get(name), figures.values.get(name)
        if theirs is None and name not in REPORTED[engine]:
            continue  # this engine never says it: no row
        if mine is None and theirs is None:
            continue
        rows.append(FigureCheck(name, mine, theirs, _CAUSES[engine].get(name, "")))
    return rows


def shortfalls(rows: list[FigureCheck], tolerance: float) -> list[FigureCheck]:
    """The rows where the engine came up more than `tolerance` below the plan."""
    return [row for row in rows if row.short(tolerance)]
