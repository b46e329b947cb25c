"""Kubernetes manifests for an SGLang plan: a LeaderWorkerSet with one pod per node, and a Service.

LeaderWorkerSet (leaderworkerset.x-k8s.io/v1, v0.6 or newer) starts the plan's nodes as one group:
pod 0 is the leader that serves HTTP, pods 1..N-1 are workers. LWS puts the pod's index in
LWS_WORKER_INDEX and the leader's address in LWS_LEADER_ADDRESS; Kubernetes expands `$(VAR)` in a
container's command, so every pod runs the same argv with its own `--node-rank`.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import yaml

from qwen35.planner.engines.sglang import DEFAULT_DIST_PORT
from qwen35.planner.errors import InputError, NoFeasiblePlan
from qwen35.planner.plan import Plan, PlanRequest

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
RANK_EXPRESSION = "$(LWS_WORKER_INDEX)"
LEADER_EXPRESSION = "$(LWS_LEADER_ADDRESS)"
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
SHM_SIZE = "64Gi"  # NCCL/RCCL and the engine's shared-memory transport live in /dev/shm
SECRET_KEY = "api-key"
# The checkpoint is downloaded once per node and kept across pod restarts (751 GiB for 397B BF16).
CACHE_HOST_PATH = "/var/lib/qwen35/hf-cache"
CACHE_MOUNT = "/root/.cache/huggingface"
HF_TOKEN_KEY = "token"
# Loading a large checkpoint takes minutes: the startup probe allows 30 before liveness takes over.
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 180


def manifest_name(plan: Plan) -> str:
    """A DNS-1123 name for the deployment: 'qwen35-397b-a17b-fp8' from the model and precision."""
    base = plan.request.served_model_name or plan.model
    slug = re.sub(r"[^a-z0-9]+", "-", f"{base}-{plan.precision}".lower()).strip("-")
    slug = slug.replace("qwen3-5", "qwen35", 1)
    return slug[:50].rstrip("-") or "qwen35"


def default_image(plan: Plan, vendor: str, arch: str) -> str:
    """The SGLang container image for the plan's release and GPU vendor (check the tag for your cluster)."""
    version = plan.engine_version or "latest"
    tag = f"v{version}" if version[:1].isdigit() else version
    if vendor == "amd":
        return f"lmsysorg/sglang:{tag}-rocm700-{'mi35x' if arch == 'gfx950' else 'mi30x'}"
    return f"lmsysorg/sglang:{tag}"


def for_kubernetes(request: PlanRequest) -> PlanRequest:
    """The request with node 0's address left to LWS, so multi-node commands need no placeholder."""
    port = (request.dist_init_addr or "").rpartition(":")[2]
    port = port if port.isdigit() else str(DEFAULT_DIST_PORT)
    return replace(request, dist_init_addr=f"{LEADER_EXPRESSION}:{port}")


def _flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _set_flag(argv: list[str], flag: str, value: str) -> None:
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]


def pod_command(plan: Plan) -> list[str]:
    """The argv every pod runs: node 0's command with the rank and leader address left to LWS."""
    argv = list(plan.commands[0].argv)
    _set_flag(argv, "--host", "0.0.0.0")  # the Service reaches the pod on its own IP
    if plan.parallel and plan.parallel.nodes > 1:
        _set_flag(argv, "--node-rank", RANK_EXPRESSION)
        address = _flag_value(argv, "--dist-init-addr") or ""
        port = address.rpartition(":")[2] if address.rpartition(":")[2].isdigit() else str(DEFAULT_DIST_PORT)
        _set_flag(argv, "--dist-init-addr", f"{LEADER_EXPRESSION}:{port}")
    if plan.request.api_key_env:
        argv += ["--api-key", f"$({plan.request.api_key_env})"]
    return argv


def _container(plan: Plan, name: str, image: str, gpu_resource: str, leader: bool) -> dict:
    env = [{"name": key, "value": value} for key, value in plan.commands[0].env.items()]
    env.append({"name": "HF_HOME", "value": CACHE_MOUNT})
    # Gated or private checkpoints need a Hugging Face token; public ones start without the secret.
    env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{name}-hf-token", "key": HF_TOKEN_KEY,
                                                                   "optional": True}}})
    if plan.request.api_key_env:
        env.append({"name": plan.request.api_key_env,
                    "valueFrom": {"secretKeyRef": {"name": f"{name}-api-key", "key": SECRET_KEY}}})
    gpus = str(plan.parallel.gpus_per_node if plan.parallel else plan.request.gpus_per_node)
    container: dict = {
        "name": "leader" if leader else "worker",
        "image": image,
        "command": pod_command(plan),
        "env": env,
        "resources": {"limits": {gpu_resource: gpus}, "requests": {gpu_resource: gpus}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-cache", "mountPath": CACHE_MOUNT}],
    }
    if leader:
        port = plan.request.port
        container["ports"] = [{"name": "http", "containerPort": port}]
        health = {"httpGet": {"path": "/health", "port": port}}
        container["startupProbe"] = {**health, "periodSeconds": STARTUP_PERIOD_S, "failureThreshold": STARTUP_FAILURES}
        container["readinessProbe"] = {**health, "periodSeconds": 10, "failureThreshold": 3}
        container["livenessProbe"] = {**health, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5}
    return container


def _pod_template(plan: Plan, name: str, image: str, gpu_resource: str, leader: bool) -> dict:
    return {
        "metadata": {"labels": {"role": "leader" if leader else "worker"}},
        "spec": {
            "containers": [_container(plan, name, image, gpu_resource, leader)],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                        {"name": "model-cache", "hostPath": {"path": CACHE_HOST_PATH, "type": "DirectoryOrCreate"}}],
        },
    }


def k8s_manifests(plan: Plan, image: str | None = None) -> tuple[list[dict], list[str]]:
    """The LeaderWorkerSet and Service for a fitting SGLang plan, and notes for the person applying them."""
    from qwen35.planner.hardware.catalog import lookup_gpu

    if plan.engine != "sglang":
        raise InputError(f"--emit k8s renders SGLang plans, not {plan.engine}", "plan with --engine sglang")
    if not plan.fits or not plan.parallel or not plan.commands:
        raise NoFeasiblePlan("no plan fits, so there is nothing to deploy", "run the plan without --emit to see ways out")
    gpu = lookup_gpu(plan.gpu)
    name = manifest_name(plan)
    image = image or default_image(plan, gpu.vendor, gpu.arch)
    gpu_resource = GPU_RESOURCE[gpu.vendor]
    lws = {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": plan.parallel.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _pod_template(plan, name, image, gpu_resource, leader=True),
                "workerTemplate": _pod_template(plan, name, image, gpu_resource, leader=False),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{name}-leader", "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "selector": {LWS_NAME_LABEL: name, "role": "leader"},
            "ports": [{"name": "http", "port": plan.request.port, "targetPort": plan.request.port, "protocol": "TCP"}],
        },
    }
    notes = [f"image {image}: check the tag matches your cluster's CUDA/ROCm build"]
    if plan.request.api_key_env:
        notes.append(f"create the API key secret first: kubectl create secret generic {name}-api-key "
                     f"--from-literal={SECRET_KEY}=<key>")
    notes.append(f"the checkpoint is cached on each node under {CACHE_HOST_PATH} (a hostPath volume); "
                 "swap it for a PersistentVolumeClaim to share one copy")
    notes.append(f"gated checkpoints: kubectl create secret generic {name}-hf-token --from-literal={HF_TOKEN_KEY}=<hf token>")
    if Path(plan.model_path).is_dir():
        notes.append(f"the model path {plan.model_path} must exist inside the container: mount it")
    return [lws, service], notes


def dump_manifests(manifests: list[dict], plan: Plan) -> str:
    """The manifests as one multi-document YAML text with a header saying what it deploys."""
    nodes = plan.parallel.nodes if plan.parallel else 1
    header = (f"# qwen35 plan --emit k8s: {plan.model} ({plan.precision.upper()}) with SGLang {plan.engine_version} "
              f"on {nodes} node(s) of {plan.parallel.gpus_per_node if plan.parallel else '?'} x {plan.gpu}.\n"
              "# Needs the LeaderWorkerSet controller v0.6+ (https://lws.sigs.k8s.io).\n")
    return header + yaml.safe_dump_all(manifests, sort_keys=False)
