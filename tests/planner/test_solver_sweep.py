"""Every checkpoint x precision x catalog GPU plans cleanly: a fitting plan or an explained refusal."""
import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.hardware.catalog import GPU_MODELS as CATALOG
from qwen35.planner.models.registry import MODEL_NAMES, resolve_model
from qwen35.planner.plan import PRECISIONS, PlanRequest
from qwen35.planner.solver import solve


def all_plans(engine="sglang", strategy="balanced"):
    """(model, precision, gpu, plan or InputError) for every combination."""
    for name in MODEL_NAMES:
        resolved = resolve_model(name)
        for precision in PRECISIONS:
            for gpu in CATALOG:
                request = PlanRequest(model=name, gpu=gpu.key, gpus_per_node=gpu.default_count,
                                      precision=precision, engine=engine, strategy=strategy)
                try:
                    yield name, precision, gpu, solve(request, gpu, resolved)
                except InputError as error:
                    yield name, precision, gpu, error


@pytest.mark.parametrize("strategy", ["balanced", "throughput", "latency"])
def test_every_combination_plans_or_explains(strategy):
    fitted = 0
    for name, precision, gpu, outcome in all_plans(strategy=strategy):
        if isinstance(outcome, InputError):
            assert outcome.hint, (name, precision, gpu.key)
            assert precision in ("fp8", "nvfp4") or "FP8" in outcome.message, outcome.message
            continue
        if not outcome.fits:
            assert outcome.ways_out and outcome.reasons, (name, precision, gpu.key)
            continue
        fitted += 1
        p = outcome.parallel
        text = resolve_model(name).config.text
        assert text.num_attention_heads % p.tp == 0 and text.linear_num_key_heads % p.tp == 0
        assert p.tp * p.dp <= gpu.default_count * p.nodes
        assert 131072 <= outcome.context_length <= 262144
        assert outcome.max_running_requests >= 1
        assert outcome.memory["weights_per_gpu_bytes"] < outcome.memory["static_bytes"]
        assert len(outcome.commands) == p.nodes
        if strategy == "latency":
            assert "--speculative-algorithm" in outcome.commands[0].argv
    assert fitted > 100


def test_balanced_grows_tp_before_it_shortens_the_context():
    """Balanced (the default) shortens the context only where no tp the node allows holds 262144;
    throughput keeps the smallest tp, so it never uses a larger tp than balanced."""
    throughput = {(name, precision, gpu.key): outcome for name, precision, gpu, outcome in all_plans(strategy="throughput")}
    shortened = grown = 0
    for name, precision, gpu, outcome in all_plans():
        if isinstance(outcome, InputError) or not outcome.fits:
            continue
        other = throughput[(name, precision, gpu.key)]
        assert other.parallel.tp <= outcome.parallel.tp and other.context_length <= outcome.context_length
        grown += other.context_length < outcome.context_length
        if outcome.context_length < 262144:
            shortened += 1
            full = solve(PlanRequest(model=name, gpu=gpu.key, gpus_per_node=gpu.default_count, precision=precision,
                                     context_length=262144), gpu, resolve_model(name))
            assert not full.fits, (name, precision, gpu.key)
    assert grown >= 5 and shortened >= 1


def test_balanced_and_throughput_on_27b_l40s_8():
    gpu = next(g for g in CATALOG if g.key == "L40S")
    resolved = resolve_model("Qwen3.5-27B")
    balanced = solve(PlanRequest(model="Qwen3.5-27B", gpu="L40S", gpus_per_node=8), gpu, resolved)
    assert (balanced.parallel.tp, balanced.parallel.dp, balanced.context_length) == (4, 2, 262144)
    assert any("tp 4: keeps the context at 262144 (balanced strategy); tp 2 holds only 131072 tokens" in reason
               for reason in balanced.reasons)
    assert not any("context reduced" in warning for warning in balanced.warnings)
    throughput = solve(PlanRequest(model="Qwen3.5-27B", gpu="L40S", gpus_per_node=8, strategy="throughput"),
                       gpu, resolved)
    assert (throughput.parallel.tp, throughput.parallel.dp, throughput.context_length) == (2, 4, 131072)
    assert "context reduced from 262144 to 131072 to fit memory" in throughput.warnings
    assert not any("keeps the context" in reason for reason in throughput.reasons)


def test_balanced_passes_over_replicas_that_run_too_few_requests():
    # vLLM's block pool gives tp 1 two requests per replica (a full context and the state blocks);
    # tp 2 runs 256 each: balanced takes tp 2 and says why, throughput keeps the most replicas.
    gpu = next(g for g in CATALOG if g.key == "H200")
    resolved = resolve_model("Qwen3.5-122B-A10B")
    request = dict(model="Qwen3.5-122B-A10B", gpu="H200", gpus_per_node=8, precision="fp8", engine="vllm")
    balanced = solve(PlanRequest(**request), gpu, resolved)
    assert (balanced.parallel.tp, balanced.parallel.dp, balanced.context_length) == (2, 4, 262144)
    assert balanced.max_running_requests == 4 * 256
    assert any(reason.startswith("tp 2: tp 1 runs only 2 requests per replica at 262144 tokens (16 over the node")
               for reason in balanced.reasons)
    throughput = solve(PlanRequest(**request, strategy="throughput"), gpu, resolved)
    assert (throughput.parallel.tp, throughput.parallel.dp, throughput.max_running_requests) == (1, 8, 16)
    forced = solve(PlanRequest(**request, tp=1), gpu, resolved)  # asked for: honoured however few it runs
    assert forced.fits and forced.parallel.tp == 1


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_thin_replica_only_where_no_larger_tp_runs_more(engine):
    """A balanced plan whose replica runs fewer than 8 requests is one where every larger tp at its context
    either does not fit or runs no more requests over the node."""
    from qwen35.planner.solver import BALANCED_MIN_RUNNING

    thin = 0
    for name, precision, gpu, outcome in all_plans(engine=engine):
        if isinstance(outcome, InputError) or not outcome.fits:
            continue
        p = outcome.parallel
        if outcome.max_running_requests // p.dp >= BALANCED_MIN_RUNNING or p.nodes > 1:
            continue
        thin += 1
        for tp in (2, 4, 8):
            if tp <= p.tp or tp > gpu.default_count:
                continue
            try:
                other = solve(PlanRequest(model=name, gpu=gpu.key, gpus_per_node=gpu.default_count,
                                          precision=precision, engine=engine, tp=tp,
                                          context_length=outcome.context_length), gpu, resolve_model(name))
            except InputError:
                continue  # that tp does not divide the model
            assert not other.fits or other.max_running_requests <= outcome.max_running_requests, (
                name, precision, gpu.key, tp)
    assert thin < 40


def test_small_models_fit_one_gpu_at_full_context():
    for name in ("Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B"):
        gpu = next(g for g in CATALOG if g.key == "H100")
        plan = solve(PlanRequest(model=name, gpu="H100", gpus_per_node=1), gpu, resolve_model(name))
        assert plan.fits and plan.parallel.tp == 1 and plan.context_length == 262144


def test_fp8_35b_cannot_use_tp8_blocks_so_ep_or_smaller_tp():
    gpu = next(g for g in CATALOG if g.key == "L40S")
    plan = solve(PlanRequest(model="Qwen3.5-35B-A3B", gpu="L40S", gpus_per_node=8, precision="fp8"),
                 gpu, resolve_model("Qwen3.5-35B-A3B"))
    # The 512-wide shared expert splits into whole 128-column FP8 blocks only up to tp 4.
    assert plan.fits and plan.parallel.tp <= 4


def test_vllm_and_bundled_render_single_node_commands():
    gpu = next(g for g in CATALOG if g.key == "H100")
    resolved = resolve_model("Qwen3.5-9B")
    vllm_plan = solve(PlanRequest(model="Qwen3.5-9B", gpu="H100", gpus_per_node=2, engine="vllm",
                                  strategy="latency"), gpu, resolved)
    argv = vllm_plan.commands[0].argv
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3.5-9B"]
    assert "--speculative-config" in argv and "--enable-auto-tool-choice" in argv
    bundled_plan = solve(PlanRequest(model="Qwen3.5-9B", gpu="H100", gpus_per_node=1, engine="bundled"),
                         gpu, resolved)
    assert bundled_plan.commands[0].argv[:2] == ["qwen35", "serve"]
    assert bundled_plan.parallel.tp == 1


def test_amd_plans_use_aiter_and_no_buffer():
    gpu = next(g for g in CATALOG if g.key == "MI300X")
    plan = solve(PlanRequest(model="Qwen3.5-122B-A10B", gpu="MI300X", gpus_per_node=8), gpu,
                 resolve_model("Qwen3.5-122B-A10B"))
    argv = plan.commands[0].argv
    assert plan.mamba_strategy == "no_buffer" and plan.page_size == 16
    assert "--disable-radix-cache" in argv and argv[argv.index("--attention-backend") + 1] == "aiter"
    assert plan.commands[0].env["SGLANG_USE_AITER"] == "1"


def test_bundled_plan_pays_for_one_prefix_checkpoint_per_running_request():
    """The bundled runtime keeps a state checkpoint per running request for prefix caching: the plan takes
    their bytes out of the KV budget, as the runtime's measured sizing does."""
    gpu = next(g for g in CATALOG if g.key == "H100")
    resolved = resolve_model("Qwen3.5-9B")
    plan = solve(PlanRequest(model="Qwen3.5-9B", gpu="H100", gpus_per_node=1, engine="bundled",
                             max_running_requests=16), gpu, resolved)
    figures = {figure.name: figure for figure in plan.figures}
    state_per_slot = plan.memory["state_bytes_per_request_per_gpu"]
    assert figures["prefix_checkpoint_bytes"].value == 16 * state_per_slot
    assert "16 prefix-cache state checkpoints" in figures["prefix_checkpoint_bytes"].equation
    budget = figures["kv_and_state_budget_per_gpu"].value - figures["prefix_checkpoint_bytes"].value
    used = 16 * state_per_slot + plan.memory["kv_tokens"] * plan.memory["kv_bytes_per_token_per_gpu"]
    assert budget - 16 * plan.memory["kv_bytes_per_token_per_gpu"] < used <= budget
