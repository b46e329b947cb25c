"""The pool rule of engines without SGLang's split: a share of the GPU, less a working set, holds
the weights, one state slot per running sequence and the KV cache (vLLM as planned, the bundled runtime)."""
from __future__ import annotations

from qwen35.planner import memory
from qwen35.planner.engines.settings import Candidate, PoolSizing
from qwen35.planner.figures import Figure, human_bytes


def size(engine: str, candidate: Candidate, utilization: float, working_set_bytes: float,
         default_running: int, checkpoints_per_request: int = 0) -> PoolSizing:
    """static = gpu x utilization - working set; as many slots as wanted that leave one full context of KV."""
    gpu_bytes, weights_bytes, requested_running = candidate.gpu_bytes, candidate.weights_bytes, candidate.requested_running
    static = gpu_bytes * utilization - working_set_bytes
    figures = [Figure("static_bytes", static, "bytes",
                      f"{human_bytes(gpu_bytes)} x {utilization} - {human_bytes(working_set_bytes)} "
                      f"working set = {human_bytes(static)}")]
    wanted = requested_running or default_running
    rest = static - weights_bytes
    figures.append(Figure("kv_and_state_budget_per_gpu", rest, "bytes",
                          f"static {human_bytes(static)} - weights {human_bytes(weights_bytes)} = {human_bytes(rest)}"))
    if checkpoints_per_request:
        checkpoints = checkpoints_per_request * wanted
        held = checkpoints * candidate.state_per_slot
        rest -= held
        figures.append(Figure("prefix_checkpoint_bytes", held, "bytes",
                              f"{checkpoints} prefix-cache state checkpoints x {human_bytes(candidate.state_per_slot)} "
                              f"= {human_bytes(held)}, out of the KV and state budget"))
    slots_figure, tokens_figure = memory.slot_pools(rest, candidate.state_per_slot, candidate.kv_per_token, wanted,
                                                       candidate.context)
    slots, tokens = int(slots_figure.value), int(tokens_figure.value)
    binding = "state slots" if slots < wanted else ("the requested value" if requested_running
                                                   else f"{engine}'s default of {wanted}")
    figures += [slots_figure, tokens_figure,
                Figure("max_running_requests", slots, "requests", f"one state slot per running sequence = {slots}")]
    return PoolSizing(static, utilization, tokens, slots, 1, slots, binding, figures)
