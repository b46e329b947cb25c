"""Size the runner's pools the way the planner sizes them, from memory measured after warm-up.

The planner's bundled plan budgets `gpu x UTILIZATION - WORKING_SET - weights` for KV and state
and splits it with `planner.memory.slot_pools`. At start-up the runtime measures instead: after
the weights are loaded and a warm-up prefill of one step's prompt tokens has run (so the
allocator has seen the activation peak), the free device memory less the (1 - UTILIZATION)
headroom and that peak is what the pools may take, split by the same `slot_pools`. On the CPU
the pools hold exactly the requested sequences at full context. The MTP head's KV (with
speculation) is inside the page pool, one more attention layer per token, as the planner counts it. The report keeps the planner's figure beside the measured one,
and the planned pool bytes beside what was allocated.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from qwen35.planner import memory
from qwen35.planner.models.config import TextConfig
from qwen35.planner.engines.bundled import UTILIZATION, WORKING_SET_BYTES

CACHE_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class PoolPlan:
    """slot_pools' answer for one budget, in the runner's units (slots, pages)."""

    budget_bytes: float  # memory for KV and state
    state_bytes_per_slot: float
    kv_bytes_per_token: float
    state_slots: int
    kv_tokens: int
    page_size: int

    @property
    def num_pages(self) -> int:
        """Whole pages of the KV pool (the scratch page comes on top)."""
        return self.kv_tokens // self.page_size

    @property
    def planned_bytes(self) -> float:
        """State slots plus KV tokens at their per-unit cost."""
        return self.state_slots * self.state_bytes_per_slot + self.kv_tokens * self.kv_bytes_per_token


@dataclass(frozen=True)
class MeasuredBudget:
    """Device memory after warm-up and what it leaves for the pools."""

    total_bytes: int
    free_bytes: int  # after warm-up, the allocator's cache emptied
    activation_peak_bytes: int  # peak allocated during warm-up above the weights
    headroom_bytes: float  # (1 - UTILIZATION) x total: graphs, fragmentation, other processes
    budget_bytes: float  # free - activation peak - headroom


def plan_pools(text: TextConfig, budget_bytes: float, wanted_slots: int, context_length: int, page_size: int,
               dtype: torch.dtype, extra_kv_layers: int = 0) -> PoolPlan:
    """State slots and KV tokens for a budget, through planner.memory's own functions (tp = 1)."""
    dtype_name = CACHE_DTYPE_NAMES[dtype]
    kv_per_token = memory.kv_bytes_per_token(text, 1, dtype_name, extra_kv_layers).value
    # The recurrent state is fp32 always; the conv state is kept in the model dtype.
    state_per_slot = memory.state_bytes_per_slot(text, 1, "fp32", dtype_name).value
    slots, tokens = memory.slot_pools(budget_bytes, state_per_slot, kv_per_token, wanted_slots, context_length)
    return PoolPlan(budget_bytes, state_per_slot, kv_per_token, int(slots.value), int(tokens.value), page_size)


def budget_for(text: TextConfig, slots: int, kv_tokens: int, context_length: int, dtype: torch.dtype,
               extra_kv_layers: int = 0) -> float:
    """The smallest budget for which plan_pools gives `slots` slots and at least kv_tokens KV tokens."""
    unit = plan_pools(text, 0, slots, context_length, 1, dtype, extra_kv_layers)
    tokens = max(kv_tokens, context_length)
    return slots * unit.state_bytes_per_slot + tokens * unit.kv_bytes_per_token


def planner_budget(total_bytes: float, weights_bytes: float) -> float:
    """The bundled plan's KV + state budget for a device of total_bytes (solver.py's arithmetic)."""
    return total_bytes * UTILIZATION - WORKING_SET_BYTES - weights_bytes


def measure_budget(device: torch.device, warm_up: Callable[[], None]) -> MeasuredBudget:
    """Run warm_up, then read free memory (torch.cuda.mem_get_info) and the activation peak; CUDA only."""
    if device.type != "cuda":
        raise ValueError("measuring the pool budget needs a CUDA device; pass a budget in bytes on the CPU")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    warm_up()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    headroom = (1 - UTILIZATION) * total
    return MeasuredBudget(total, free, peak, headroom, free - peak - headroom)


def sizing_report(plan: PoolPlan, allocated_state_bytes: int, allocated_kv_bytes: int,
                  measured: MeasuredBudget | None = None, planner_budget_bytes: float | None = None) -> dict:
    """Planned vs allocated pool bytes (and the measured and planner budgets when known), JSON-ready."""
    allocated = allocated_state_bytes + allocated_kv_bytes
    report = {
        "budget_bytes": plan.budget_bytes,
        "state_slots": plan.state_slots,
        "kv_tokens": plan.kv_tokens,
        "page_size": plan.page_size,
        "num_pages": plan.num_pages,
        "planned_state_bytes": plan.state_slots * plan.state_bytes_per_slot,
        "planned_kv_bytes": plan.kv_tokens * plan.kv_bytes_per_token,
        "planned_bytes": plan.planned_bytes,
        "allocated_state_bytes": allocated_state_bytes,
        "allocated_kv_bytes": allocated_kv_bytes,
        "allocated_bytes": allocated,
        "allocated_over_planned": allocated / plan.planned_bytes if plan.planned_bytes else None,
    }
    if measured is not None:
        report["measured"] = asdict(measured)
    if planner_budget_bytes is not None:
        report["planner_budget_bytes"] = planner_budget_bytes
    return report
