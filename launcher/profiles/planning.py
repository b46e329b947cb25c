"""Profiles and plans: a profile as a PlanRequest, a request as a profile, and the round-trippable plan.

`qwen35 plan --yaml` prints the plan with a `profile:` section that reproduces it: the request
in profile form with the solver's decisions pinned (precision, engine release, context, mamba
strategy) where pinning leaves the plan identical. Each pin is checked by planning again, so
a pin that would change a warning or a reason (a context the solver reduced, say) is left out.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from qwen35.launcher.profiles.loader import PLAN_SECTION
from qwen35.launcher.profiles.schema import PROFILE_VERSION, Profile, looks_like_path
from qwen35.planner.errors import InputError, Qwen35Error
from qwen35.planner.plan import EngineCommand, Plan, PlanRequest

EXTRA_ARGS, EXTRA_ENV = "extra_args", "extra_env"  # engine_settings keys, present when set
PORT_RANGE = (1, 65535)  # 0 ("any free port") would leave launch no address to probe


def to_plan_request(profile: Profile, gpu_memory_bytes: int | None = None) -> PlanRequest:
    """The PlanRequest a profile describes (measured GPU memory added when known)."""
    serving = profile.serving
    return PlanRequest(
        model=profile.model, gpu=profile.hardware.gpu, gpus_per_node=profile.hardware.count,
        precision=profile.precision, nodes=profile.hardware.nodes, engine=profile.engine.name,
        engine_version=profile.engine.version, context_length=serving.context_length,
        strategy=serving.strategy, max_running_requests=serving.max_running_requests,
        mamba_strategy=serving.mamba_strategy, mamba_ssm_dtype=serving.mamba_ssm_dtype,
        host=serving.host, port=serving.port, served_model_name=serving.served_model_name,
        api_key_env=serving.api_key_env, dist_init_addr=serving.dist_init_addr,
        gpu_memory_bytes=gpu_memory_bytes,
    )


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def request_to_profile(request: PlanRequest, extra_args: Sequence[str] = (),
                       env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The profile form of a request, keys in schema order, unset values left out."""
    profile: dict[str, Any] = _without_none({
        "version": PROFILE_VERSION,
        "model": request.model,
        "precision": request.precision,
        "hardware": _without_none({"gpu": request.gpu, "count": request.gpus_per_node, "nodes": request.nodes}),
        "engine": _without_none({"name": request.engine, "version": request.engine_version}),
        "serving": _without_none({
            "host": request.host, "port": request.port, "context_length": request.context_length,
            "strategy": request.strategy, "max_running_requests": request.max_running_requests,
            "served_model_name": request.served_model_name, "api_key_env": request.api_key_env,
            "mamba_strategy": request.mamba_strategy, "mamba_ssm_dtype": request.mamba_ssm_dtype,
            "dist_init_addr": request.dist_init_addr,
        }),
    })
    if extra_args:
        profile["extra_args"] = list(extra_args)
    if env:
        profile["env"] = dict(env)
    return profile


def apply_extras(plan: Plan, extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Plan:
    """Append a profile's extra arguments to every command and lay its environment over theirs.

    The plan records them in engine_settings (extra_args, extra_env) so that it can be turned
    back into the profile that made it.
    """
    if extra_args:
        plan.engine_settings[EXTRA_ARGS] = list(extra_args)
    if env:
        plan.engine_settings[EXTRA_ENV] = dict(env)
    if extra_args or env:
        plan.commands = [EngineCommand(c.node_rank, [*c.argv, *extra_args], {**c.env, **(env or {})})
                         for c in plan.commands]
    return plan


def plan_extras(plan: Plan) -> tuple[list[str], dict[str, str]]:
    """The extra arguments and environment a plan was made with."""
    return list(plan.engine_settings.get(EXTRA_ARGS, [])), dict(plan.engine_settings.get(EXTRA_ENV, {}))


def plan_request(request: PlanRequest, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> Plan:
    """Plan a request (planner.planning) with a profile's extra arguments and environment applied."""
    from qwen35.planner import planning

    check_request_inputs(request)
    return apply_extras(planning.plan_request(request), extra_args, env)


def check_request_inputs(request: PlanRequest) -> None:
    """InputError for what the planner would carry into commands unchecked: the port, a missing model folder."""
    low, high = PORT_RANGE
    if not low <= request.port <= high:
        raise InputError(f"--port {request.port} is not a TCP port (expected {low} to {high})",
                         "choose a free port such as --port 30000 (serving.port in a profile)")
    folder = Path(request.model).expanduser()
    if looks_like_path(request.model) and not folder.is_dir():
        looked = "" if folder.is_absolute() else f" (looked for {folder.absolute()})"
        raise InputError(f"model folder {request.model} does not exist{looked}",
                         "pass a checkpoint folder holding config.json; a relative path in a profile is read "
                         "from the profile file's folder, in a shipped profile from the working directory")


def plan_profile(profile: Profile, gpu_memory_bytes: int | None = None) -> Plan:
    """Plan what a profile describes, extras applied."""
    return plan_request(to_plan_request(profile, gpu_memory_bytes), profile.extra_args, profile.env)


def _same_plan(plan: Plan) -> dict:
    data = plan.to_dict()
    data.pop("request", None)
    return data


def _pins(plan: Plan) -> list[dict[str, Any]]:
    """Request fields that would hold the solver's decisions, one candidate each."""
    pins: list[dict[str, Any]] = [{"precision": plan.precision}, {"engine_version": plan.engine_version}]
    if plan.fits and plan.context_length:
        pins.append({"context_length": plan.context_length})
    if plan.fits and plan.engine == "sglang" and plan.mamba_strategy:
        pins.append({"mamba_strategy": plan.mamba_strategy})
    return pins


def pinned_request(plan: Plan) -> PlanRequest:
    """The plan's request with every decision pinned that leaves the plan identical."""
    target = _same_plan(plan)
    extra_args, env = plan_extras(plan)

    def reproduces(request: PlanRequest) -> bool:
        try:
            return _same_plan(plan_request(request, extra_args, env)) == target
        except Qwen35Error:
            return False

    pins = [pin for pin in _pins(plan) if any(getattr(plan.request, k) != v for k, v in pin.items())]
    everything = {key: value for pin in pins for key, value in pin.items()}
    if not pins or reproduces(replace(plan.request, **everything)):
        return replace(plan.request, **everything)
    request = plan.request
    for pin in pins:
        candidate = replace(request, **pin)
        if reproduces(candidate):
            request = candidate
    return request


def plan_document(plan: Plan) -> dict:
    """The plan as `plan --json/--yaml` print it: the plan's keys, with `profile` in place of `request`."""
    document = _same_plan(plan)
    document[PLAN_SECTION] = request_to_profile(pinned_request(plan), *plan_extras(plan))
    return document
