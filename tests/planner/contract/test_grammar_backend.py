"""Every planned SGLang and vLLM command picks llguidance for structured outputs, as the bundled runtime does
(the release parsers accept the flags: test_planner_commands.py)."""
from .test_planner_commands import SGLANG_PREFIX, VLLM_PREFIX, VLLM_VERSION, planned_argvs


def _has(argv: list[str], flag: str, value: str) -> bool:
    return flag in argv and argv[argv.index(flag) + 1] == value


def test_plans_render_the_grammar_backend():
    sglang = planned_argvs("sglang", "0.5.23", SGLANG_PREFIX)
    vllm = planned_argvs("vllm", VLLM_VERSION, VLLM_PREFIX)
    assert sglang and all(_has(argv, "--grammar-backend", "llguidance") for argv in sglang)
    assert vllm and all(_has(argv, "--structured-outputs-config.backend", "guidance") for argv in vllm)
