"""The profile schema, version 1: what a YAML profile may say, validated with pydantic.

A profile is a PlanRequest a person can keep in a file, plus what the planner does not decide
(extra engine arguments, environment). Every mapping forbids unknown keys and types are strict,
so `port: "30000"` or `version: 0.5` is an error that says what was expected, not a guess.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qwen35.planner.cpu_plan import CPU_TARGET
from qwen35.planner.errors import InputError

PROFILE_VERSION = 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_FLAGS = ("--api-key",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Hardware(_Strict):
    """Where the model runs: one GPU model, how many per node, and how many nodes."""

    gpu: str = Field(description="a GPU catalog key such as H200, or 'cpu' for the bundled runtime's CPU demo")
    count: int = Field(ge=1, description="GPUs per node, at least 1")
    nodes: Optional[int] = Field(default=None, ge=1, description="nodes, at least 1 (default: as many as needed)")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str) -> str:
        from qwen35.planner.hardware.catalog import lookup_gpu

        if value.strip().lower() == CPU_TARGET:
            return CPU_TARGET
        try:
            return lookup_gpu(value).key
        except InputError as error:
            raise ValueError(f"{error.message}; {error.hint}; or 'cpu' for the bundled runtime") from None


class Engine(_Strict):
    """Which engine serves the model, and the release its command line is spelled for."""

    name: Literal["sglang", "vllm", "bundled"] = Field(default="sglang", description="sglang, vllm or bundled")
    version: Optional[str] = Field(default=None, description="release to render for when it is not installed, e.g. '0.5.23'")


class Serving(_Strict):
    """How the engine serves: address, context, concurrency, and the SGLang cache strategy."""

    host: str = "0.0.0.0"
    port: int = Field(default=30000, ge=1, le=65535)
    context_length: Optional[int] = Field(default=None, ge=1)
    strategy: Literal["balanced", "throughput", "latency"] = "balanced"
    max_running_requests: Optional[int] = Field(default=None, ge=1)
    served_model_name: Optional[str] = None
    api_key_env: Optional[str] = Field(default=None, description="name of the environment variable that holds the API key")
    mamba_strategy: Optional[Literal["no_buffer", "extra_buffer"]] = None
    mamba_ssm_dtype: Literal["fp32", "bf16"] = "fp32"
    dist_init_addr: Optional[str] = Field(default=None, description="HOST:PORT of node 0 for multi-node plans")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"expected the name of an environment variable (like QWEN35_API_KEY), got {value!r}; "
                             "the key itself never goes in a profile")
        return value

    @field_validator("dist_init_addr")
    @classmethod
    def _host_port(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT of node 0 (like 10.0.0.1:20000), got {value!r}")
        return value


class Profile(_Strict):
    """A deployment kept in a file: model, precision, hardware, engine, serving and extras."""

    version: Literal[1] = Field(description="the profile format version, 1")
    model: str = Field(min_length=1, description="registry name (Qwen3.5-9B), hub id or local checkpoint directory")
    precision: Optional[Literal["bf16", "fp8", "nvfp4"]] = None
    hardware: Hardware = Field(description="a mapping with gpu, count and optional nodes")
    engine: Engine = Field(default_factory=Engine)
    serving: Serving = Field(default_factory=Serving)
    extra_args: list[str] = Field(default_factory=list, description="arguments appended to every engine command")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables for every engine command")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if looks_like_path(value):
            return value  # checked when planning: a profile may name a directory made later
        from qwen35.planner.models.registry import resolve_model

        try:
            resolve_model(value)
        except InputError as error:
            raise ValueError(error.one_line()) from None
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_secrets(cls, value: list[str]) -> list[str]:
        for arg in value:
            if arg.split("=", 1)[0] in _SECRET_FLAGS:
                raise ValueError("--api-key does not belong in a profile; name the variable that holds it "
                                 "in serving.api_key_env")
        return value


def looks_like_path(model: str) -> bool:
    """Whether a model spec means a directory (./x, /x, ~/x, or a/b/c) rather than a registry name or hub id."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def consistency_issues(profile: Profile) -> list[tuple[tuple, str]]:
    """Cross-field problems as (key path, message): the pairs pydantic cannot see one field at a time."""
    issues = []
    if profile.hardware.gpu == CPU_TARGET:
        if profile.engine.name != "bundled":
            issues.append((("engine", "name"), f"the cpu target runs only the bundled runtime, got {profile.engine.name!r}; "
                                               "set engine.name: bundled"))
        if profile.hardware.count != 1 or (profile.hardware.nodes or 1) != 1:
            issues.append((("hardware", "count"), "the cpu target is one process on one machine; set count: 1 and no nodes"))
    return issues


def field_help(path: tuple) -> str:
    """What a key holds, from the schema's field descriptions (empty when it has none)."""
    model: type[BaseModel] | None = Profile
    info = None
    for key in path:
        if model is None or not isinstance(key, str) or key not in model.model_fields:
            return ""
        info = model.model_fields[key]
        annotation = info.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return (info.description or "") if info else ""


def allowed_keys(path: tuple) -> list[str] | None:
    """The keys a mapping at `path` may hold, or None when it is free-form (env) or not a mapping."""
    model: type[BaseModel] = Profile
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    keys = list(model.model_fields)
    return keys + ["extends"] if model is Profile else keys
