"""What `qwen35 launch` does around the engine: pick the node's command, check the machine, build the process.

The supervision itself (process group, log, readiness, signals) is `qwen35.launcher.supervise`;
this module decides what to run and whether this machine can run it. Preflight checks never
raise: each returns a Check, and a failed one carries the error the launch would stop with.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from qwen35.launcher import checkpoint_check, preflight
from qwen35.planner.cpu_plan import CPU_TARGET
from qwen35.launcher.readiness import local_base_url
from qwen35.planner.errors import InputError, NoFeasiblePlan, Qwen35Error
from qwen35.planner.figures import human_bytes
from qwen35.planner.plan import EngineCommand, Plan

# Runs in place of the engine's program (below); the plan's arguments follow unchanged. For an
# engine installed elsewhere ("/opt/sglang/bin/python -m sglang.launch_server") or a stand-in.
ENGINE_EXECUTABLE_ENV = "QWEN35_ENGINE_EXECUTABLE"
ENGINE_PROGRAMS = {
    "sglang": ("python3", "-m", "sglang.launch_server"),
    "vllm": ("vllm", "serve"),
    "bundled": ("qwen35", "serve"),
}
# Without max_tokens a request may run to the end of the context: minutes on a CPU.
CPU_EXAMPLE_MAX_TOKENS = 64
GPU_EXAMPLE_MAX_TOKENS = 512
# The variable each engine reads its API key from when no --api-key is given; SGLang reads none,
# so it gets the key in a private --config file (a YAML of flags, merged under the command line).
API_KEY_VARIABLES = {"bundled": "QWEN35_API_KEY", "vllm": "VLLM_API_KEY"}
SGLANG_CONFIG_FLAG = "--config"
MEMORY_SLACK = 0.98  # a detected GPU may report a little less than the catalog figure

OK, WARNING, SKIPPED, FAILED = "ok", "warning", "skipped", "failed"


@dataclass(frozen=True)
class Check:
    """One preflight result; `error` is what a real launch stops with when it failed."""

    name: str
    status: str
    detail: str
    error: Qwen35Error | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _failed(name: str, error: Qwen35Error) -> Check:
    return Check(name, FAILED, error.one_line(), error)


def require_fit(plan: Plan) -> None:
    """Raise NoFeasiblePlan (exit 3) with the solver's reason when the plan does not fit."""
    if not plan.fits:
        reason = plan.reasons[-1] if plan.reasons else "no configuration holds the model"
        raise NoFeasiblePlan(f"nothing to launch: {reason}", f"try {plan.ways_out[0].describe()}" if plan.ways_out else "")


def node_command(plan: Plan, node_rank: int | None, dry_run: bool = False) -> EngineCommand:
    """The command this node runs: the only one, or the one of `node_rank` in a multi-node plan."""
    count = len(plan.commands)
    if node_rank is None:
        if count > 1 and not dry_run:
            raise InputError(f"this plan spans {count} nodes", "start each node with --node-rank R (0 is the leader that serves the API)")
        return plan.commands[0]
    if not 0 <= node_rank < count:
        raise InputError(f"--node-rank {node_rank} is outside this {count}-node plan",
                         f"use a rank from 0 to {count - 1}" if count > 1 else "drop --node-rank: the plan runs on one node")
    return plan.commands[node_rank]


def engine_argv(command: EngineCommand, engine: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The argv to execute: the engine program of this Python environment, or the override."""
    env = os.environ if env is None else env
    program = ENGINE_PROGRAMS[engine]
    if tuple(command.argv[: len(program)]) != program:
        raise Qwen35Error(f"unexpected {engine} command: {shlex.join(command.argv[:3])}", "report this as a qwen35 bug")
    args = command.argv[len(program):]
    override = env.get(ENGINE_EXECUTABLE_ENV)
    if override:
        return [*shlex.split(override), *args]
    # The preflight checked the engine in this environment: run that one, not whatever is on PATH.
    if engine == "sglang":
        return [sys.executable, *command.argv[1:]]
    if engine == "bundled":
        return [sys.executable, "-m", "qwen35.launcher.cli", *command.argv[1:]]
    beside = Path(sys.executable).with_name("vllm")
    return [str(beside) if beside.exists() else "vllm", *command.argv[1:]]


class ApiKeyHandoff:
    """How the API key reaches the engine outside its command line, which any local user can read.

    `args` and `env` go to the engine; `forget()` removes SGLang's key file (once the engine is
    ready it has long parsed its flags) and runs again on leaving the `with` block.
    """

    def __init__(self, engine: str, api_key: str | None, argv: Sequence[str] = ()):
        self.args: list[str] = []
        self.env: dict[str, str] = {}
        self._folder: Path | None = None
        if not api_key:
            return
        if engine in API_KEY_VARIABLES:
            self.env[API_KEY_VARIABLES[engine]] = api_key
            return
        if SGLANG_CONFIG_FLAG in argv or any(arg.startswith(SGLANG_CONFIG_FLAG + "=") for arg in argv):
            raise InputError("extra_args passes SGLang a --config file, and launch passes the API key in one of "
                             "its own (SGLang takes one)", "move those flags into extra_args, or drop api_key_env")
        self._folder = Path(tempfile.mkdtemp(prefix="qwen35-key-"))  # mode 0700: only we can enter it
        path = self._folder / "api-key.yaml"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(f"api-key: {json.dumps(api_key)}\n")  # a JSON string is a YAML scalar
        self.args = [SGLANG_CONFIG_FLAG, str(path)]

    def forget(self) -> None:
        """Remove the key file, if there is one."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> ApiKeyHandoff:
        return self

    def __exit__(self, *exc_info) -> None:
        self.forget()


def how_the_key_travels(engine: str) -> str:
    """For messages: the route of the API key into `engine`."""
    if engine in API_KEY_VARIABLES:
        return f"in the engine's environment as {API_KEY_VARIABLES[engine]}"
    return "in a private --config file that is removed once the engine is ready"


def _check_engine(plan: Plan, env: Mapping[str, str]) -> Check:
    override = env.get(ENGINE_EXECUTABLE_ENV)
    if override:
        return Check("engine", SKIPPED, f"{ENGINE_EXECUTABLE_ENV}={override} runs in place of {plan.engine}")
    if plan.engine == "bundled":
        if importlib.util.find_spec("torch") is None:
            return _failed("engine", Qwen35Error("the bundled runtime needs torch, which is not installed",
                                                 "install it with: pip install torch"))
        return Check("engine", OK, f"bundled runtime (qwen35 {plan.engine_version})")
    try:
        version = preflight.check_engine_installed(plan.engine)
    except Qwen35Error as error:
        return _failed("engine", error)
    pinned = plan.request.engine_version
    if pinned and pinned != version:
        return Check("engine", WARNING, f"{plan.engine} {version} installed; the profile pins {pinned} "
                                        f"and the command is spelled for {version}")
    return Check("engine", OK, f"{plan.engine} {version}")


def _check_gpus(plan: Plan, dry_run: bool, named_target: bool) -> Check:
    if plan.gpu == CPU_TARGET:
        return Check("gpus", SKIPPED, "cpu target")
    if dry_run and named_target:
        return Check("gpus", SKIPPED, f"planned for the named target {plan.gpu}; this machine is not checked in a dry run")
    from qwen35.planner.hardware.detect import detect_hardware

    report = detect_hardware()
    need = plan.parallel.gpus_per_node if plan.parallel else plan.request.gpus_per_node
    if not report.gpus:
        why = f" ({report.warnings[0]})" if report.warnings else ""
        return Check("gpus", WARNING, f"no GPU detected{why}; the plan needs {need} x {plan.gpu} on this node")
    if report.count < need:
        return _failed("gpus", InputError(f"the plan needs {need} x {plan.gpu} on this node; {report.count} GPU(s) are visible",
                                          "plan for this machine with --gpu auto, or check CUDA_VISIBLE_DEVICES"))
    smallest = min(gpu.memory_total_bytes for gpu in report.gpus)
    assumed = plan.memory.get("gpu_memory_bytes")
    if assumed and smallest < assumed * MEMORY_SLACK:
        return _failed("gpus", InputError(f"the plan assumes {human_bytes(assumed)} per GPU; the smallest visible GPU has "
                                          f"{human_bytes(smallest)}", "plan for this machine with --gpu auto"))
    found = report.gpus[0].name
    if report.model is not None and report.model.key != plan.gpu:
        return Check("gpus", WARNING, f"planned for {plan.gpu}, found {report.count} x {found}; memory is sufficient")
    return Check("gpus", OK, f"{report.count} x {found} ({human_bytes(smallest)} each)")


def _check_model(plan: Plan) -> Check:
    try:
        source = preflight.check_model_source(plan.model_path)
    except Qwen35Error as error:
        return _failed("model", error)
    if source == preflight.SOURCE_DOWNLOAD:
        size = plan.memory.get("weights_total_bytes")
        about = f" (about {human_bytes(size)})" if size else ""
        return Check("model", WARNING, f"{plan.model_path} is not in the Hugging Face cache; the engine downloads it{about} at start")
    if source == preflight.SOURCE_CACHED:
        return Check("model", OK, f"{plan.model_path} (in the Hugging Face cache)")
    try:
        shards = checkpoint_check.check_checkpoint(plan.model_path)
    except Qwen35Error as error:
        return _failed("model", error)
    if shards == 0:
        return Check("model", WARNING, f"{plan.model_path} holds no safetensors weights ({checkpoint_check.INDEX_FILE} "
                                       f"or {checkpoint_check.SINGLE_FILE}); the engine may not load it")
    return Check("model", OK, f"{plan.model_path} (local checkpoint; {shards} safetensors shard(s) whole, "
                              "generation defaults valid)")


def _check_port(plan: Plan, command: EngineCommand) -> Check:
    if command.node_rank != 0:
        return Check("port", SKIPPED, f"node {command.node_rank} does not serve HTTP")
    try:
        preflight.check_port_free(plan.request.host, plan.request.port)
    except Qwen35Error as error:
        return _failed("port", error)
    return Check("port", OK, f"{plan.request.host}:{plan.request.port} is free")


def _check_api_key(plan: Plan, env: Mapping[str, str]) -> Check | None:
    name = plan.request.api_key_env
    if not name:
        return None
    if not env.get(name):
        return _failed("api_key", InputError(f"serving.api_key_env names {name}, which is not set",
                                             f"export {name}=<key>, or drop api_key_env to serve without a key"))
    return Check("api_key", OK, f"from ${name}, passed {how_the_key_travels(plan.engine)} (never printed)")


def _check_multinode(plan: Plan) -> Check | None:
    if len(plan.commands) < 2:
        return None
    if not plan.request.dist_init_addr:
        return _failed("dist_init_addr", InputError("a multi-node launch needs node 0's address",
                                                    "pass --dist-init-addr HOST:PORT (serving.dist_init_addr in a profile)"))
    return Check("dist_init_addr", OK, f"nodes meet at {plan.request.dist_init_addr}")


def run_preflight(plan: Plan, command: EngineCommand, *, dry_run: bool, named_target: bool,
                  env: Mapping[str, str] | None = None) -> list[Check]:
    """Every check for launching `command` here: engine, GPUs, model, port, API key, multi-node address."""
    env = os.environ if env is None else env
    checks = [_check_engine(plan, env), _check_gpus(plan, dry_run, named_target), _check_model(plan),
              _check_port(plan, command), _check_api_key(plan, env), _check_multinode(plan)]
    return [check for check in checks if check is not None]


def first_failure(checks: list[Check]) -> Qwen35Error | None:
    """The error of the first failed check, if any."""
    return next((check.error for check in checks if check.status == FAILED), None)


def default_log_path(plan: Plan, node_rank: int, env: Mapping[str, str] | None = None) -> Path:
    """~/.cache/qwen35/logs/<model>-node<R>-<time>.log (XDG_CACHE_HOME honoured)."""
    env = os.environ if env is None else env
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache / "qwen35" / "logs" / f"{plan.model}-node{node_rank}-{stamp}.log"


def base_url(plan: Plan) -> str:
    """Where a client on this machine reaches the engine."""
    return local_base_url(plan.request.host, plan.request.port)


def example_max_tokens(plan: Plan) -> int:
    """The max_tokens the printed examples ask for: a short answer, quick on the CPU demo too."""
    return CPU_EXAMPLE_MAX_TOKENS if plan.gpu == CPU_TARGET else GPU_EXAMPLE_MAX_TOKENS


def client_snippets(url: str, model_id: str, api_key_env: str | None, max_tokens: int) -> str:
    """A curl command and an openai-python snippet for the running endpoint (the key by variable name only)."""
    auth = f' \\\n  -H "Authorization: Bearer ${api_key_env}"' if api_key_env else ""
    body = '{"model": "%s", "max_tokens": %d, "messages": [{"role": "user", "content": "Hello!"}]}' % (
        model_id, max_tokens)
    key = f'os.environ["{api_key_env}"]' if api_key_env else '"none"'
    imports = "import os\n" if api_key_env else ""
    return (
        f"curl {url}/v1/chat/completions \\\n  -H 'Content-Type: application/json'{auth} \\\n  -d '{body}'\n\n"
        f"# pip install openai\n{imports}from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{url}/v1", api_key={key})\n'
        f'reply = client.chat.completions.create(model="{model_id}", max_tokens={max_tokens},\n'
        f'                                       messages=[{{"role": "user", "content": "Hello!"}}])\n'
        "print(reply.choices[0].message.content)\n"
    )
