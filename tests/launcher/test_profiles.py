"""Profiles as a library: schema, located errors, extends, shipped files, and the plan round trip."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from qwen35.launcher.profiles import (CPU_TARGET, ProfileError, check_profile_file, is_base, load_profile,
                                      merge, plan_document, plan_profile, plan_request, request_to_profile,
                                      shipped_names, shipped_path, to_plan_request)
from qwen35.planner.errors import InputError
from qwen35.planner.models.registry import registry_config_json
from qwen35.planner.plan import PlanRequest


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def issues(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.exit_code == 2
    return [str(issue) for issue in caught.value.issues]


GOOD = """
    version: 1
    model: Qwen3.5-9B
    precision: bf16
    hardware:
      gpu: h100
      count: 1
    engine:
      name: sglang
      version: "0.5.13.post1"
    serving:
      port: 31000
      api_key_env: MY_KEY
    extra_args: ["--enable-metrics"]
    env:
      NCCL_DEBUG: WARN
"""


def test_a_good_profile_becomes_the_request_it_describes(tmp_path):
    profile = load_profile(write(tmp_path, "good.yaml", GOOD))
    assert profile.hardware.gpu == "H100"  # aliases normalise to the catalog key
    request = to_plan_request(profile)
    assert request == PlanRequest(model="Qwen3.5-9B", gpu="H100", gpus_per_node=1, precision="bf16",
                                  engine="sglang", engine_version="0.5.13.post1", port=31000, api_key_env="MY_KEY")
    plan = plan_profile(profile)
    assert plan.fits
    assert plan.commands[0].argv[-1] == "--enable-metrics"
    assert plan.commands[0].env["NCCL_DEBUG"] == "WARN"
    assert "--mamba-scheduler-strategy" in plan.commands[0].argv  # spelled for the pinned 0.5.13.post1
    back = request_to_profile(request, profile.extra_args, profile.env)
    assert back["serving"]["api_key_env"] == "MY_KEY" and back["extra_args"] == ["--enable-metrics"]


def test_errors_name_file_line_column_key_and_what_is_allowed(tmp_path):
    path = write(tmp_path, "bad.yaml", """
        version: 1
        model: Qwen3.5-9B
        hardware:
          gpu: H100
          count: 0
        serving:
          port: abc
          strategy: fast
          colour: blue
        engine:
          version: 0.5
        env: {A: 1}
        """)
    found = issues(path)
    assert all(line.startswith(str(path)) or line.startswith("bad.yaml") for line in found)
    assert found[0].endswith(":5:3: hardware.count: expected a number >= 1, got 0")
    assert found[1].endswith(":7:3: serving.port: expected an integer, got 'abc'")
    assert found[2].endswith(":8:3: serving.strategy: expected 'balanced', 'throughput' or 'latency', got 'fast'")
    assert ":9:3: serving.colour: unknown key; allowed: host, port," in found[3]
    assert found[4].endswith(":11:3: engine.version: expected a string, got 0.5 (quote it: '0.5')")
    assert found[5].endswith(":12:7: env.A: expected a string, got 1 (quote it: '1')")
    assert len(found) == 6


@pytest.mark.parametrize("text, expected", [
    ("version: 1\nmodel: Qwen3.5-9B\nhardware:\n  gpu: H100\n   count: 1\n", ":5:9: invalid YAML"),
    ("", ":1:1: the file is empty"),
    ("- a\n- b\n", ":1:1: expected a mapping"),
    ("version: 1\nmodel: Qwen3.5-1000B\nhardware: {gpu: H100, count: 1}\n", ":2:1: model: unknown model 'Qwen3.5-1000B'"),
    ("version: 1\nmodel: Qwen3.5-9B\nhardware: {gpu: H900, count: 1}\n", ":3:12: hardware.gpu: unknown GPU 'H900'"),
    ("version: 1\nmodel: Qwen3.5-9B\n", ":1:1: hardware: required key missing"),
    ("version: 2\nmodel: Qwen3.5-9B\nhardware: {gpu: H100, count: 1}\n", ":1:1: version: expected 1, got 2"),
    ("version: 1\nmodel: Qwen3.5-9B\nmodel: Qwen3.5-27B\nhardware: {gpu: H100, count: 1}\n", ":3:1: model: duplicate key"),
    ("version: 1\nmodel: x/y/z\nhardware: {gpu: H100, count: 1}\nserving: {api_key_env: sk-123}\n",
     "serving.api_key_env: expected the name of an environment variable"),
    ("version: 1\nmodel: Qwen3.5-9B\nhardware: {gpu: H100, count: 1}\nextra_args: [--api-key, k]\n",
     "extra_args: --api-key does not belong in a profile"),
    ("version: 1\nmodel: ./demo\nhardware: {gpu: cpu, count: 1}\n", "engine.name: the cpu target runs only the bundled runtime"),
    ("version: 1\nmodel: Qwen3.5-9B\nhardware: {gpu: H100, count: 1}\nserving: {dist_init_addr: node0}\n",
     "serving.dist_init_addr: expected HOST:PORT"),
])
def test_each_kind_of_mistake_is_reported_where_it_is(tmp_path, text, expected):
    found = issues(write(tmp_path, "p.yaml", text))
    assert any(expected in line for line in found), found


def test_extends_deep_merges_child_wins_lists_replaced(tmp_path):
    write(tmp_path, "base.yaml", """
        version: 1
        model: Qwen3.5-9B
        hardware: {gpu: H100, count: 1}
        serving: {port: 31000, strategy: latency}
        extra_args: [--a, --b]
        env: {X: "1", Y: "2"}
        """)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.yaml", """
        extends: ../base.yaml
        serving: {port: 32000}
        extra_args: [--c]
        env: {Y: "3"}
        """)
    profile = load_profile(child)
    assert profile.serving.port == 32000 and profile.serving.strategy == "latency"
    assert profile.extra_args == ["--c"] and profile.env == {"X": "1", "Y": "3"}
    assert merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}
    # An error in the base is reported in the base file, one in the child in the child.
    write(tmp_path, "base.yaml", "version: 1\nmodel: Qwen3.5-9B\nhardware: {gpu: H100, count: 1}\nserving: {host: 1}\n")
    assert any("base.yaml:4:11: serving.host: expected a string" in line for line in issues(child))


def test_extends_cycles_and_missing_targets_are_input_errors(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\nversion: 1\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    assert any("b.yaml:1:1: extends: cycle: " in line and re.search(r"a\.yaml -> \S*b\.yaml -> \S*a\.yaml$", line)
               for line in issues(tmp_path / "a.yaml"))
    write(tmp_path, "c.yaml", "version: 1\nextends: nowhere.yaml\n")
    assert any("c.yaml:2:1: extends: cannot find 'nowhere.yaml'" in line for line in issues(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match="no such profile file"):
        load_profile(tmp_path / "absent.yaml")


def test_a_profile_can_extend_a_shipped_profile_by_name(tmp_path):
    child = write(tmp_path, "mine.yaml", """
        extends: qwen35-397b-a17b-base
        precision: fp8
        hardware: {gpu: H200, count: 8}
        serving: {port: 8000}
        """)
    profile = load_profile(child)
    assert profile.model == "Qwen3.5-397B-A17B" and profile.serving.port == 8000
    assert plan_profile(profile).parallel.tp == 4


def test_every_shipped_profile_validates_and_plans_to_a_fit(tmp_path, monkeypatch):
    names = shipped_names()
    gpus_precisions = {(p.hardware.gpu, p.precision) for name in names
                       if (p := check_profile_file(shipped_path(name))) and p.model == "Qwen3.5-397B-A17B"}
    assert gpus_precisions == {("H100", "bf16"), ("H100", "fp8"), ("H200", "bf16"), ("H200", "fp8"),
                               ("B200", "bf16"), ("B200", "fp8"), ("B200", "nvfp4"),
                               ("B300", "bf16"), ("B300", "fp8"), ("B300", "nvfp4"),
                               ("MI300X", "bf16"), ("MI300X", "fp8"), ("MI325X", "bf16"), ("MI325X", "fp8"),
                               ("MI355X", "bf16"), ("MI355X", "fp8")}
    monkeypatch.chdir(tmp_path)  # the CPU demo names ./demo-model, resolved from the working directory
    (tmp_path / "demo-model").mkdir()
    (tmp_path / "demo-model" / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    for name in names:
        path = shipped_path(name)
        profile = check_profile_file(path)
        if is_base(path):
            assert profile is None or profile.model
            continue
        plan = plan_profile(profile)
        assert plan.fits, (name, plan.reasons)
        assert plan.context_length >= 8192, name
        if profile.model == "Qwen3.5-397B-A17B":
            expected_nodes = 2 if profile.hardware.gpu == "H100" and profile.precision == "bf16" else 1
            assert plan.parallel.nodes == expected_nodes, name
            assert len(plan.commands) == expected_nodes


def test_cpu_demo_plans_through_the_bundled_cpu_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile = load_profile(shipped_path("qwen35-demo-cpu"))  # validates before the directory exists
    assert profile.hardware.gpu == CPU_TARGET and profile.engine.name == "bundled"
    with pytest.raises(InputError):
        plan_profile(profile)  # no ./demo-model yet: resolve_model says so
    (tmp_path / "demo-model").mkdir()
    (tmp_path / "demo-model" / "config.json").write_text(json.dumps(registry_config_json("Qwen3.5-0.8B")))
    plan = plan_profile(profile)
    assert plan.fits and plan.gpu == CPU_TARGET and plan.parallel.tp == 1
    argv = plan.commands[0].argv
    assert argv[:2] == ["qwen35", "serve"] and argv[argv.index("--device") + 1] == "cpu"
    assert argv[argv.index("--max-model-len") + 1] == "8192" and argv[argv.index("--port") + 1] == "8000"
    with pytest.raises(InputError, match="bundled"):
        plan_request(PlanRequest(model="./demo-model", gpu=CPU_TARGET, gpus_per_node=1, engine="sglang"))


ROUND_TRIPS = [
    PlanRequest(model="Qwen3.5-397B-A17B", gpu="H100", gpus_per_node=8, precision="bf16"),  # 2 nodes, auto
    PlanRequest(model="Qwen3.5-397B-A17B", gpu="H100", gpus_per_node=8, precision="bf16", nodes=2,
                dist_init_addr="10.0.0.1:20000", api_key_env="KEY"),
    PlanRequest(model="Qwen3.5-27B", gpu="H100", gpus_per_node=1),  # context reduced: not pinned
    PlanRequest(model="Qwen/Qwen3.5-9B-FP8", gpu="H200", gpus_per_node=1, strategy="latency"),
    PlanRequest(model="Qwen3.5-397B-A17B", gpu="MI355X", gpus_per_node=8, precision="fp8"),
    PlanRequest(model="Qwen3.5-35B-A3B", gpu="H100", gpus_per_node=8, engine="vllm", max_running_requests=64),
    PlanRequest(model="Qwen3.5-397B-A17B", gpu="RTX4090", gpus_per_node=1, nodes=1),  # does not fit
]


@pytest.mark.parametrize("request_", ROUND_TRIPS, ids=lambda r: f"{r.model}-{r.gpu}-{r.engine}")
def test_plan_yaml_read_back_as_a_profile_gives_the_identical_plan(tmp_path, request_):
    first = plan_document(plan_request(request_, ["--enable-metrics"], {"A": "1"}))
    assert first["profile"]["extra_args"] == ["--enable-metrics"] and first["profile"]["env"] == {"A": "1"}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(first, sort_keys=False))
    profile = load_profile(path)
    again = plan_document(plan_profile(profile))
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    pinned = first["profile"]
    assert pinned["engine"]["version"] == first["engine_version"] and pinned["precision"] == first["precision"]
    if first["fits"] and not any("context reduced" in w for w in first["warnings"]):
        assert pinned["serving"]["context_length"] == first["context_length"]
    if any("context reduced" in w for w in first["warnings"]):
        assert "context_length" not in pinned["serving"]  # pinning it would drop that warning
    assert "request" not in first and "profile" in first
