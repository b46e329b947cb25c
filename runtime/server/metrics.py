"""Prometheus metrics in the text exposition format (0.0.4), written without a client library.

The server owns one `ServerMetrics`; the engine reports token timings to it as its
observer, and the gauges read the engine's queues when /metrics is scraped.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
GRAMMAR_COMPILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add `amount` to the series named by the label values."""
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The current value of one series (0 if never touched)."""
        return self._values.get(labels, 0.0)

    def samples(self) -> list[str]:
        """Exposition lines for every series."""
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]
        return [f"{self.name}_total{_labels(self.label_names, key)} {_number(v)}" for key, v in items]


class Gauge:
    """A value read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]):
        self.name, self.help, self.read = name, help_text, read

    def samples(self) -> list[str]:
        """The one exposition line."""
        return [f"{self.name} {_number(self.read())}"]


class Histogram:
    """Observations counted into cumulative `le` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]):
        self.name, self.help = name, help_text
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)  # last: above every bound
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation."""
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value
            self.count += 1

    def samples(self) -> list[str]:
        """Cumulative bucket lines, then _sum and _count."""
        with self._lock:
            counts, total, number = list(self._counts), self.sum, self.count
        lines, running = [], 0
        for bound, bucket in zip(self.bounds + (math.inf,), counts):
            running += bucket
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_number(total)}")
        lines.append(f"{self.name}_count {number}")
        return lines


class ServerMetrics:
    """Every metric the server exports; also the engine's observer for token timings."""

    def __init__(self, running: Callable[[], float] = lambda: 0, waiting: Callable[[], float] = lambda: 0,
                 kv_cache_usage: Callable[[], float] = lambda: 0.0):
        self.requests = Counter("qwen35_requests", "HTTP requests by endpoint and status code.",
                                ("endpoint", "status"))
        self.prompt_tokens = Counter("qwen35_prompt_tokens", "Prompt tokens of the requests served.")
        self.cached_prompt_tokens = Counter("qwen35_prefix_cache_hit_tokens",
                                            "Prompt tokens taken from the prefix cache (not prefilled).")
        self.computed_prompt_tokens = Counter("qwen35_prefix_cache_computed_tokens", "Prompt tokens prefilled.")
        self.generation_tokens = Counter("qwen35_generation_tokens", "Tokens generated.")
        self.aborted = Counter("qwen35_aborted_requests", "Generations ended early (client gone or timed out).")
        self.time_to_first_token = Histogram("qwen35_time_to_first_token_seconds",
                                             "Seconds from arrival to a sequence's first token.", TTFT_BUCKETS)
        self.inter_token_latency = Histogram("qwen35_inter_token_latency_seconds",
                                             "Seconds between consecutive tokens of a sequence.", ITL_BUCKETS)
        self.running = Gauge("qwen35_running_requests", "Sequences holding a cache row.", running)
        self.waiting = Gauge("qwen35_waiting_requests", "Sequences waiting for a cache row.", waiting)
        self.kv_cache_usage = Gauge("qwen35_kv_cache_usage_ratio",
                                    "Share of the KV page pool held by running sequences.", kv_cache_usage)
        self.draft_tokens = Counter("qwen35_spec_decode_draft_tokens", "Draft tokens the MTP head proposed.")
        self.accepted_tokens = Counter("qwen35_spec_decode_accepted_tokens", "Draft tokens verification accepted.")
        self.grammar_compile_seconds = Histogram("qwen35_grammar_compile_seconds",
                                                 "Seconds to compile an output grammar (cache misses only).",
                                                 GRAMMAR_COMPILE_BUCKETS)
        self.grammar_cache_hits = Counter("qwen35_grammar_cache_hits", "Output grammars found compiled in the cache.")
        self.acceptance_rate = Gauge("qwen35_spec_decode_acceptance_rate",
                                     "Accepted / drafted tokens since start (0 before any draft).", self._acceptance)

    def on_prompt(self, num_tokens: int, num_cached: int) -> None:
        """Engine observer: a prompt was prefilled, all but num_cached of its tokens."""
        self.prompt_tokens.inc(amount=num_tokens)
        self.cached_prompt_tokens.inc(amount=num_cached)
        self.computed_prompt_tokens.inc(amount=num_tokens - num_cached)

    def on_token(self, seconds_since_previous: float, first: bool) -> None:
        """Engine observer: one token delivered."""
        self.generation_tokens.inc()
        if first:
            self.time_to_first_token.observe(seconds_since_previous)
        else:
            self.inter_token_latency.observe(seconds_since_previous)

    def on_speculation(self, drafted: int, accepted: int) -> None:
        """Engine observer: one speculative step proposed `drafted` tokens and kept `accepted`."""
        self.draft_tokens.inc(amount=drafted)
        self.accepted_tokens.inc(amount=accepted)

    def _acceptance(self) -> float:
        drafted = self.draft_tokens.value()
        return self.accepted_tokens.value() / drafted if drafted else 0.0

    def render(self) -> str:
        """The whole exposition text."""
        lines: list[str] = []
        for metric in (self.requests, self.prompt_tokens, self.cached_prompt_tokens, self.computed_prompt_tokens,
                       self.generation_tokens, self.aborted,
                       self.time_to_first_token, self.inter_token_latency, self.running, self.waiting,
                       self.kv_cache_usage,
                       self.draft_tokens, self.accepted_tokens, self.acceptance_rate,
                       self.grammar_compile_seconds, self.grammar_cache_hits):
            exposed = f"{metric.name}_total" if metric.kind == "counter" else metric.name
            lines.append(f"# HELP {exposed} {metric.help}")
            lines.append(f"# TYPE {exposed} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
