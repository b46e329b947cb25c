"""The plan: what the solver decided, every figure behind it, and the engine commands."""
from __future__ import annotations

from dataclasses import dataclass, field

from qwen35.planner.figures import Figure

PRECISIONS = ("bf16", "fp8", "nvfp4")
ENGINES = ("sglang", "vllm", "bundled")
STRATEGIES = ("balanced", "throughput", "latency")
MAMBA_STRATEGIES = ("no_buffer", "extra_buffer")


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for; `None` means "choose for me"."""

    model: str
    gpu: str                        # catalog key, e.g. "H200"
    gpus_per_node: int
    precision: str | None = None
    nodes: int | None = None        # None: one node; multi-node plans are only made when asked
    engine: str = "sglang"
    engine_version: str | None = None
    context_length: int | None = None
    strategy: str = "balanced"
    max_running_requests: int | None = None
    mamba_strategy: str | None = None
    mamba_ssm_dtype: str = "fp32"
    host: str = "0.0.0.0"
    port: int = 30000
    served_model_name: str | None = None
    api_key_env: str | None = None
    dist_init_addr: str | None = None
    gpu_memory_bytes: int | None = None  # measured total memory per GPU, when detected
    tp: int | None = None           # forced layout sizes; None: the solver chooses
    dp: int | None = None
    ep: int | None = None


@dataclass(frozen=True)
class Parallel:
    """How the model is split: tensor, expert, data and pipeline parallel sizes and node layout."""

    tp: int
    ep: int
    dp: int
    pp: int
    nodes: int
    gpus_per_node: int

    def to_dict(self) -> dict:
        """Plain-data form for JSON/YAML."""
        return {"tp": self.tp, "ep": self.ep, "dp": self.dp, "pp": self.pp,
                "nodes": self.nodes, "gpus_per_node": self.gpus_per_node}


@dataclass(frozen=True)
class EngineCommand:
    """One process to start: the argv, its environment, and which node runs it."""

    node_rank: int
    argv: list[str]
    env: dict[str, str]

    def to_dict(self) -> dict:
        """Plain-data form for JSON/YAML."""
        return {"node_rank": self.node_rank, "argv": list(self.argv), "env": dict(self.env)}

    def shell(self) -> str:
        """The command as one line to paste into a shell."""
        import shlex

        env = " ".join(f"{key}={shlex.quote(value)}" for key, value in self.env.items())
        line = shlex.join(self.argv)
        return f"{env} {line}" if env else line


@dataclass(frozen=True)
class WayOut:
    """A change that, applied alone, gives a plan that fits (re-planned before it is offered)."""

    flags: str        # the command-line change, e.g. "--nodes 2"
    why: str          # what the change adds or gives up
    gpus: int         # GPUs the changed request occupies: the ranking key, cheapest first
    tp: int
    nodes: int
    context_length: int
    max_running_requests: int

    def describe(self) -> str:
        """One line: the change, what it means, and the plan it leads to."""
        return (f"{self.flags} ({self.why}): tp {self.tp}, {self.nodes} node(s), {self.gpus} GPUs, "
                f"context {self.context_length}, {self.max_running_requests} running requests")

    def to_dict(self) -> dict:
        """Plain-data form for JSON/YAML."""
        return {"flags": self.flags, "why": self.why, "gpus": self.gpus, "tp": self.tp, "nodes": self.nodes,
                "context_length": self.context_length, "max_running_requests": self.max_running_requests}


@dataclass
class Plan:
    """A complete deployment decision, or the reasons none fits."""

    request: PlanRequest
    model: str
    model_path: str
    precision: str
    engine: str
    engine_version: str | None
    gpu: str
    fits: bool
    parallel: Parallel | None = None
    context_length: int | None = None
    max_running_requests: int | None = None
    full_context_requests: int | None = None
    mamba_strategy: str | None = None
    page_size: int | None = None
    mem_fraction_static: float | None = None
    speculative: dict | None = None
    memory: dict[str, float] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    engine_settings: dict = field(default_factory=dict)
    commands: list[EngineCommand] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    ways_out: list[WayOut] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The machine-readable plan: the keys other tools read are stable."""
        return {
            "model": self.model,
            "model_path": self.model_path,
            "precision": self.precision,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "gpu": self.gpu,
            "fits": self.fits,
            "parallel": self.parallel.to_dict() if self.parallel else None,
            "context_length": self.context_length,
            "max_running_requests": self.max_running_requests,
            "full_context_requests": self.full_context_requests,
            "mamba_strategy": self.mamba_strategy,
            "page_size": self.page_size,
            "mem_fraction_static": self.mem_fraction_static,
            "speculative": self.speculative,
            "strategy": self.request.strategy,
            "memory": dict(self.memory),
            "figures": [figure.to_dict() for figure in self.figures],
            "engine_settings": dict(self.engine_settings),
            "commands": [command.to_dict() for command in self.commands],
            "warnings": list(self.warnings),
            "reasons": list(self.reasons),
            "ways_out": [way.to_dict() for way in self.ways_out],
            "request": _request_dict(self.request),
        }


def _request_dict(request: PlanRequest) -> dict:
    from dataclasses import asdict

    return asdict(request)
