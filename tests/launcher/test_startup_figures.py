"""The engines' start-up figures read from their logs and held against the plan.

The recorded logs in startup_logs/ are each supported release's own start-up lines, written from
that release's format strings; `test_every_anchor_is_the_releases_own_wording` finds each
pattern's literal text in the release's files where they are on this machine (the contract
harness of tests/planner/contract installs them under its cache).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwen35.launcher import startup_figures as sf
from qwen35.launcher.startup_view import phases_line, warning_lines

LOGS = Path(__file__).with_name("startup_logs")
RELEASES = [("sglang", "0.5.13.post1"), ("sglang", "0.5.19"), ("sglang", "0.5.20"), ("sglang", "0.5.23"),
            ("vllm", "0.33.0")]
IDS = [f"{engine}-{version}" for engine, version in RELEASES]


def contract_cache() -> Path:
    configured = os.environ.get("QWEN35_CONTRACT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "qwen35" / "contract"


def read(engine: str, text: str) -> sf.EngineFigures:
    ticks = iter(range(1000))
    reader = sf.StartupReader(engine, clock=lambda: float(next(ticks)))
    for line in text.splitlines():
        reader.feed(line)
    return reader.figures()


def recorded(engine: str, version: str) -> str:
    return (LOGS / f"{engine}-{version}.log").read_text()


def plan_with(**figures) -> SimpleNamespace:
    """The plan's public fields the check reads, as the 9B-on-one-H100 plan states them."""
    values = dict(kv_tokens=845651, state_slots=483, max_running_requests=96, context_length=262144,
                  full_context_requests=3, mem_fraction_static=0.835)
    values.update(figures)
    return SimpleNamespace(memory={"kv_tokens": values["kv_tokens"], "state_slots": values["state_slots"]},
                           max_running_requests=values["max_running_requests"],
                           context_length=values["context_length"],
                           full_context_requests=values["full_context_requests"],
                           mem_fraction_static=values["mem_fraction_static"])


@pytest.mark.parametrize("engine, version", RELEASES, ids=IDS)
def test_each_release_log_gives_its_figures_and_phases(engine, version):
    figures = read(engine, recorded(engine, version))
    expected = {"kv_tokens": 845651, "running_requests": 96, "context_length": 262144}
    if engine == "sglang":
        expected.update(state_slots=483, memory_fraction=0.835)
    else:
        expected.update(full_context_requests=3, memory_fraction=0.83)  # 3.23x: three whole requests
    assert figures.values == expected
    assert set(figures.phases) == {sf.WEIGHTS_LOADED, sf.GRAPHS_CAPTURED}
    assert figures.phases[sf.WEIGHTS_LOADED] < figures.phases[sf.GRAPHS_CAPTURED]
    assert set(sf.REPORTED[engine]) == set(expected)


@pytest.mark.parametrize("engine, version", RELEASES, ids=IDS)
def test_every_anchor_is_the_releases_own_wording(engine, version):
    package = contract_cache() / f"{engine}-{version}" / engine
    if not package.is_dir():
        pytest.skip(f"{engine} {version} is not in {contract_cache()} (the tests in tests/planner/contract fetch it)")
    sources = "\n".join(path.read_text(errors="replace") for path in package.rglob("*.py"))
    for pattern in sf.PATTERNS[engine]:
        assert pattern.source, pattern.regex.pattern
        for fragment in pattern.source:
            assert fragment in sources, f"{engine} {version} has no {fragment!r}"


@pytest.mark.parametrize("engine, version", RELEASES, ids=IDS)
def test_a_log_matching_the_plan_warns_of_nothing(engine, version):
    plan = plan_with(mem_fraction_static=0.835 if engine == "sglang" else 0.83)
    rows = sf.compare(plan, read(engine, recorded(engine, version)), engine)
    assert {row.name for row in rows} == set(sf.REPORTED[engine])
    assert all(row.difference == 0 for row in rows)
    assert warning_lines(rows, sf.DEFAULT_TOLERANCE) == [] and sf.shortfalls(rows, sf.DEFAULT_TOLERANCE) == []


def test_an_sglang_engine_smaller_than_planned_warns_with_the_cause_and_flag():
    log = recorded("sglang", "0.5.23").replace("max_total_num_tokens=845651", "max_total_num_tokens=700000") \
        .replace("max_mamba_cache_size: 483", "max_mamba_cache_size: 470").replace("max_running_requests=96", "max_running_requests=90")
    rows = sf.compare(plan_with(), read("sglang", log), "sglang")
    warnings = warning_lines(rows, 0.05)
    assert len(warnings) == 2  # 470 of 483 state slots (-2.7%) is within 5%
    assert warnings[0].startswith("KV tokens: the engine has 700000, the plan 845651 (-17.2%): SGLang found less free")
    assert "--mem-fraction-static" in warnings[0]
    assert warnings[1].startswith("running requests: the engine has 90, the plan 96 (-6.2%)")
    assert "--max-running-requests" in warnings[1]
    assert [row.name for row in sf.shortfalls(rows, 0.05)] == ["kv_tokens", "running_requests"]
    assert [row.name for row in sf.shortfalls(rows, 0.20)] == []
    state = next(row for row in rows if row.name == "state_slots")
    assert state.off(0.02) and "--mamba-full-memory-ratio" in state.hint


def test_a_vllm_engine_with_a_shorter_model_length_and_a_larger_pool():
    log = recorded("vllm", "0.33.0").replace("Maximum concurrency for 262,144 tokens", "Maximum concurrency for 131,072 tokens") \
        .replace("845,651 tokens,", "950,000 tokens,")
    rows = {row.name: row for row in sf.compare(plan_with(mem_fraction_static=0.83), read("vllm", log), "vllm")}
    assert rows["context_length"].short(0.05) and "--max-model-len" in rows["context_length"].hint
    assert rows["kv_tokens"].off(0.05) and not rows["kv_tokens"].short(0.05)  # more than planned: a warning only
    assert "state_slots" not in rows  # vLLM does not say


def test_a_memory_fraction_below_the_plan_warns_but_is_no_shortfall():
    rows = sf.compare(plan_with(mem_fraction_static=0.9), read("sglang", recorded("sglang", "0.5.20")), "sglang")
    fraction = next(row for row in rows if row.name == "memory_fraction")
    assert fraction.off(0.05) and not fraction.short(0.05)
    assert sf.shortfalls(rows, 0.05) == []


def test_figures_the_engine_never_states_are_shown_as_not_stated():
    rows = sf.compare(plan_with(), read("sglang", "nothing useful\n"), "sglang")
    assert [row.engine for row in rows] == [None] * 5 and warning_lines(rows, 0.05) == []


def test_the_phases_line_lists_what_was_seen_in_order():
    figures = read("sglang", recorded("sglang", "0.5.19"))
    figures.phases[sf.SERVING] = 70.0
    assert phases_line(figures) == f"time to ready: weights loaded {figures.phases[sf.WEIGHTS_LOADED]:.1f} s, " \
                                   f"graphs captured {figures.phases[sf.GRAPHS_CAPTURED]:.1f} s, serving 70.0 s"
