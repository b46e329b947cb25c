"""Kubernetes output: a LeaderWorkerSet per plan, one pod per node, and a Service for the leader."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from qwen35.launcher.k8s import (GPU_RESOURCE, LEADER_EXPRESSION, LWS_API_VERSION, LWS_NAME_LABEL, RANK_EXPRESSION,
                                 dump_manifests, for_kubernetes, k8s_manifests)
from qwen35.launcher.profiles import load_profile, plan_request, shipped_path, to_plan_request
from qwen35.planner.errors import InputError, NoFeasiblePlan
from qwen35.planner.plan import PlanRequest


def shipped_plan(name: str, **changes):
    from dataclasses import replace

    request = for_kubernetes(replace(to_plan_request(load_profile(shipped_path(name))), **changes))
    return plan_request(request)


def documents(plan) -> list[dict]:
    manifests, _ = k8s_manifests(plan)
    parsed = list(yaml.safe_load_all(dump_manifests(manifests, plan)))
    assert parsed == manifests  # what is printed parses back to the same objects
    return parsed


def containers(lws: dict) -> dict[str, dict]:
    template = lws["spec"]["leaderWorkerTemplate"]
    return {role: template[f"{role}Template"]["spec"]["containers"][0] for role in ("leader", "worker")}


@pytest.mark.parametrize("name, resource, nodes, gpus", [
    ("qwen35-397b-a17b-h100-bf16", "nvidia.com/gpu", 2, "8"),
    ("qwen35-397b-a17b-mi300x-bf16", "amd.com/gpu", 1, "8"),
])
def test_leaderworkerset_runs_each_rank_with_its_gpus(name, resource, nodes, gpus):
    plan = shipped_plan(name)
    lws, service = documents(plan)
    assert (lws["apiVersion"], lws["kind"]) == (LWS_API_VERSION, "LeaderWorkerSet")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert lws["spec"]["replicas"] == 1 and lws["spec"]["leaderWorkerTemplate"]["size"] == nodes
    pods = containers(lws)
    for role, container in pods.items():
        command = container["command"]
        assert command[:3] == ["python3", "-m", "sglang.launch_server"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        if nodes > 1:
            assert command[command.index("--nnodes") + 1] == str(nodes)
            assert command[command.index("--node-rank") + 1] == RANK_EXPRESSION == "$(LWS_WORKER_INDEX)"
            assert command[command.index("--dist-init-addr") + 1] == f"{LEADER_EXPRESSION}:20000"
            assert "NODE0_IP" not in " ".join(command)
        else:
            assert "--node-rank" not in command
        assert container["resources"]["limits"] == {resource: gpus} == container["resources"]["requests"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        volumes = lws["spec"]["leaderWorkerTemplate"][f"{role}Template"]["spec"]["volumes"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in volumes
        assert {"name": "model-cache", "mountPath": "/root/.cache/huggingface"} in container["volumeMounts"]
        assert {"name": "model-cache", "hostPath": {"path": "/var/lib/qwen35/hf-cache", "type": "DirectoryOrCreate"}} in volumes
        assert {"name": "HF_HOME", "value": "/root/.cache/huggingface"} in container["env"]
        token = next(item for item in container["env"] if item["name"] == "HF_TOKEN")
        assert token["valueFrom"]["secretKeyRef"] == {"name": f"{lws['metadata']['name']}-hf-token", "key": "token",
                                                      "optional": True}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pods["leader"][probe]["httpGet"] == {"path": "/health", "port": 30000}
        assert probe not in pods["worker"]
    startup = pods["leader"]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # a large checkpoint loads for minutes
    assert service["spec"]["selector"] == {LWS_NAME_LABEL: lws["metadata"]["name"], "role": "leader"}
    assert service["spec"]["ports"][0]["port"] == service["spec"]["ports"][0]["targetPort"] == 30000
    if resource == "amd.com/gpu":
        assert {"name": "SGLANG_USE_AITER", "value": "1"} in pods["leader"]["env"]
        assert "rocm" in pods["leader"]["image"]
    assert GPU_RESOURCE[plan_vendor(plan)] == resource


def plan_vendor(plan) -> str:
    from qwen35.planner.hardware.catalog import lookup_gpu

    return lookup_gpu(plan.gpu).vendor


def test_api_key_comes_from_a_secret_and_the_dist_port_is_kept():
    plan = shipped_plan("qwen35-397b-a17b-h100-bf16", api_key_env="QWEN35_API_KEY",
                        dist_init_addr="10.1.2.3:5000", port=8080)
    (lws, service), notes = k8s_manifests(plan)
    leader = containers(lws)["leader"]
    assert leader["command"][-2:] == ["--api-key", "$(QWEN35_API_KEY)"]
    assert leader["command"][leader["command"].index("--dist-init-addr") + 1] == f"{LEADER_EXPRESSION}:5000"
    secret = {"name": "QWEN35_API_KEY", "valueFrom": {"secretKeyRef": {"name": f"{lws['metadata']['name']}-api-key", "key": "api-key"}}}
    assert secret in leader["env"]
    assert leader["ports"] == [{"name": "http", "containerPort": 8080}] and service["spec"]["ports"][0]["port"] == 8080
    assert any("kubectl create secret generic" in note for note in notes)


def test_only_fitting_sglang_plans_are_emitted():
    vllm = plan_request(PlanRequest(model="Qwen3.5-9B", gpu="H100", gpus_per_node=1, engine="vllm"))
    with pytest.raises(InputError, match="SGLang"):
        k8s_manifests(vllm)
    too_big = plan_request(PlanRequest(model="Qwen3.5-397B-A17B", gpu="RTX4090", gpus_per_node=1, nodes=1))
    with pytest.raises(NoFeasiblePlan):
        k8s_manifests(too_big)


def test_plan_emit_k8s_writes_one_file_per_manifest(tmp_path):
    env = {**os.environ}
    env.pop("QWEN35_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "qwen35.launcher.cli", "plan", "--profile", "qwen35-397b-a17b-h100-bf16",
                           "--emit", "k8s", "--output", str(tmp_path / "k8s")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    written = sorted(tmp_path.joinpath("k8s").iterdir())
    assert [path.name for path in written] == ["qwen35-397b-a17b-bf16-leader-service.yaml",
                                                "qwen35-397b-a17b-bf16-leaderworkerset.yaml"]
    assert done.stdout.split() == [str(path) for path in reversed(written)]
    lws = yaml.safe_load(written[1].read_text())
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert "NODE0_IP" not in done.stderr  # LWS supplies node 0's address: no placeholder warning
