"""The contract harness asks each engine release's real parser: the right flags pass, wrong ones fail."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .engine_cli import (
    EngineCliError,
    default_cache_root,
    ensure_sglang,
    index_reachable,
    is_installed,
    parse_sglang,
    parse_vllm,
    recipe_for,
    _install_stand_ins,
    _requirement_pins,
    _StandInFinder,
)

MODEL = "Qwen/Qwen3.5-397B-A17B"
OLD_MAMBA_FLAG = "--mamba-scheduler-strategy"
NEW_MAMBA_FLAG = "--mamba-radix-cache-strategy"


@dataclass(frozen=True)
class SglangRelease:
    """A release under test and what it does with each spelling of the mamba cache flag."""

    version: str
    mamba_flag: str  # the spelling the release documents
    takes_other_spelling: bool  # whether the other spelling still parses (a deprecated alias)

    @property
    def other_flag(self) -> str:
        """The spelling this release does not document."""
        return OLD_MAMBA_FLAG if self.mamba_flag == NEW_MAMBA_FLAG else NEW_MAMBA_FLAG


SGLANG_RELEASES = (
    SglangRelease("0.5.13.post1", OLD_MAMBA_FLAG, takes_other_spelling=False),  # last with the old name only
    # 0.5.14-0.5.19 take both; the old name is a deprecated alias.
    SglangRelease("0.5.19", NEW_MAMBA_FLAG, takes_other_spelling=True),
    SglangRelease("0.5.20", NEW_MAMBA_FLAG, takes_other_spelling=False),  # first to reject the old name
    SglangRelease("0.5.23", NEW_MAMBA_FLAG, takes_other_spelling=False),  # newest on PyPI
)
VLLM_VERSION = "0.33.0"


def _sglang_argvs(release: SglangRelease) -> list[list[str]]:
    # `--tp` is argparse's abbreviation of --tp-size (the only option it prefixes).
    base = ["--model-path", MODEL, "--tp", "8"]
    return [
        [*base, release.mamba_flag, "extra_buffer"],
        [*base, release.other_flag, "extra_buffer"],
        [*base, "--bogus-flag", "1"],
        [*base, release.mamba_flag, "v2"],
        [*base, "--cuda-graph-max-bs", "256"],
    ]


VLLM_ARGVS = [
    [MODEL, "--tensor-parallel-size", "8", "--max-model-len", "262144", "--language-model-only",
     "--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder",
     "--mamba-ssm-cache-dtype", "float32",
     "--speculative-config", '{"method": "qwen3_next_mtp", "num_speculative_tokens": 2}'],
    [MODEL, "--bogus-flag", "1"],
    [MODEL, "--mamba-ssm-cache-dtype", "fp8"],
    [MODEL, NEW_MAMBA_FLAG, "extra_buffer"],  # an SGLang flag
]


@pytest.fixture(scope="module")
def verdicts() -> dict[str, Future | str]:
    """Per release ("0.5.19", ..., "vllm"): a Future of its verdicts, or why it is skipped."""
    requests = {release.version: ("sglang", release.version, parse_sglang, _sglang_argvs(release))
                for release in SGLANG_RELEASES}
    requests["vllm"] = ("vllm", VLLM_VERSION, parse_vllm, VLLM_ARGVS)
    missing = [key for key, (engine, version, _, _) in requests.items() if not is_installed(engine, version)]
    # Skip only a release that must be downloaded while the index is unreachable: cached
    # releases run offline, and any other failure is a failure.
    skipped = {}
    if missing and not index_reachable():
        skipped = {key: f"not cached in {default_cache_root()} and the package index is unreachable"
                   for key in missing}
    # Releases install and parse concurrently: most of a cold run is download and unpacking.
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = {key: pool.submit(parse, version, argvs)
                   for key, (_, version, parse, argvs) in requests.items() if key not in skipped}
        yield {**skipped, **futures}


def _verdicts(verdicts: dict[str, Future | str], key: str) -> list[str | None]:
    outcome = verdicts[key]
    if isinstance(outcome, str):
        pytest.skip(f"{key}: {outcome}")
    return outcome.result()


@pytest.mark.network
@pytest.mark.parametrize("release", SGLANG_RELEASES, ids=lambda release: release.version)
def test_sglang_accepts_a_minimal_argv_with_its_mamba_flag(verdicts, release):
    accepted, *_ = _verdicts(verdicts, release.version)
    assert accepted is None


@pytest.mark.network
@pytest.mark.parametrize("release", SGLANG_RELEASES, ids=lambda release: release.version)
def test_sglang_other_mamba_spelling_is_rejected_unless_an_alias(verdicts, release):
    other = _verdicts(verdicts, release.version)[1]
    if release.takes_other_spelling:
        assert other is None
    else:
        assert other == f"unrecognized arguments: {release.other_flag} extra_buffer"


@pytest.mark.network
@pytest.mark.parametrize("release", SGLANG_RELEASES, ids=lambda release: release.version)
def test_sglang_rejects_a_bogus_flag_and_a_bad_choice(verdicts, release):
    answers = _verdicts(verdicts, release.version)
    assert answers[2] == "unrecognized arguments: --bogus-flag 1"
    assert answers[3].startswith(f"argument {release.mamba_flag}: invalid choice: 'v2'")


@pytest.mark.network
@pytest.mark.parametrize("release", SGLANG_RELEASES, ids=lambda release: release.version)
def test_sglang_cuda_graph_max_bs_is_ambiguous_from_0_5_20(verdicts, release):
    # By 0.5.19 --cuda-graph-max-bs is a deprecated alias beside --cuda-graph-max-bs-{decode,prefill};
    # 0.5.20 drops the alias, and the old name then abbreviates both of the new ones.
    verdict = _verdicts(verdicts, release.version)[4]
    if release.version in ("0.5.13.post1", "0.5.19"):
        assert verdict is None
    else:
        assert verdict == ("ambiguous option: --cuda-graph-max-bs could match "
                           "--cuda-graph-max-bs-decode, --cuda-graph-max-bs-prefill")


@pytest.mark.network
def test_vllm_serve_accepts_the_qwen35_flags_and_rejects_foreign_ones(verdicts):
    accepted, bogus, bad_choice, sglang_flag = _verdicts(verdicts, "vllm")
    assert accepted is None
    assert bogus == "unrecognized arguments: --bogus-flag 1"
    assert bad_choice.startswith("argument --mamba-ssm-cache-dtype: invalid choice: 'fp8'")
    assert sglang_flag == f"unrecognized arguments: {NEW_MAMBA_FLAG} extra_buffer"


@pytest.mark.network
def test_a_second_request_reuses_the_installed_release(verdicts):
    version = SGLANG_RELEASES[-1].version
    _verdicts(verdicts, version)  # installed by now
    assert is_installed("sglang", version)
    marker = default_cache_root() / f"sglang-{version}" / ".qwen35-contract.json"
    before = marker.stat().st_mtime_ns
    assert ensure_sglang(version) == marker.parent
    assert marker.stat().st_mtime_ns == before


def test_recipes_follow_the_release_ranges():
    assert recipe_for("sglang", "0.5.13.post1").first == "0.5.0"
    assert recipe_for("sglang", "0.5.14").first == "0.5.0"
    assert recipe_for("sglang", "0.5.18").first == "0.5.16"
    assert recipe_for("sglang", "0.5.19").first == "0.5.19"
    assert recipe_for("sglang", "0.5.22").first == "0.5.19"
    assert recipe_for("sglang", "0.5.23").first == "0.5.23"
    assert recipe_for("sglang", "0.6.0").first == "0.5.23"
    assert "torchvision" not in recipe_for("sglang", "0.5.23").stubs


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN35_CONTRACT_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("QWEN35_CONTRACT_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "qwen35" / "contract"


def test_pins_come_from_metadata_with_markers_applied(tmp_path):
    dist_info = tmp_path / "engine-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: engine\nVersion: 1.0\n"
        "Requires-Dist: transformers==5.8.1\n"
        "Requires-Dist: requests\n"
        'Requires-Dist: checkpoint-engine==0.1.2; extra == "checkpoint-engine"\n'
        'Requires-Dist: av==16.1.0; sys_platform == "nonexistent"\n'
        "Requires-Dist: Partial_JSON_Parser>=0.2\n"
    )
    assert _requirement_pins(tmp_path) == {
        "transformers": ["==5.8.1"], "requests": [], "partial-json-parser": [">=0.2"],
    }


@pytest.mark.network
def test_an_unknown_release_fails_with_the_pip_error(tmp_path):
    if not index_reachable():
        pytest.skip("the package index is unreachable")
    with pytest.raises(EngineCliError, match="sglang==0.0.999"):
        parse_sglang("0.0.999", [["--model-path", MODEL]], root=tmp_path)


def test_stand_ins_import_decorate_and_step_aside_for_real_packages(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the finders go away with the test
    root = "qwen35_absent_gpu_library"
    _install_stand_ins([root, "json"])
    try:
        from qwen35_absent_gpu_library.language import extra  # noqa: F401  (a submodule import)
        import qwen35_absent_gpu_library as library

        @library.jit
        def kernel():
            return 7

        @library.autotune(configs=[library.Config(num_warps=4)], key=["n"])
        def tuned():
            return 8

        assert (kernel(), tuned()) == (7, 8)
        assert not isinstance(kernel, library.runtime.jit.JITFunction)
        assert [finder.root for finder in sys.meta_path if isinstance(finder, _StandInFinder)] == [root]
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == root]:
            del sys.modules[name]
