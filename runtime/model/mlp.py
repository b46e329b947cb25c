"""Feed-forward blocks: the dense SwiGLU MLP and the sparse MoE block with a gated shared expert."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwen35.planner.models.config import TextConfig
from qwen35.runtime.kernels import KernelSet


class MLP(nn.Module):
    """down(silu(gate(x)) * up(x)), with gate and up as one packed projection.

    gate_up_proj [2*I, H] holds the checkpoint's gate_proj rows then its up_proj rows (the loader
    packs them): one matmul, then one silu_mul.
    """

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor, kernels: KernelSet) -> torch.Tensor:
        """SwiGLU over the last dimension."""
        return self.down_proj(kernels.silu_mul(self.gate_up_proj(x)))


class Router(nn.Module):
    """Softmax over experts, top-k, weights renormalised to sum to 1."""

    def __init__(self, text: TextConfig):
        super().__init__()
        self.top_k = text.num_experts_per_tok
        self.renormalize = text.norm_topk_prob
        self.weight = nn.Parameter(torch.zeros(text.num_experts, text.hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, H] -> (weights [N, k] in x's dtype, expert ids [N, k])."""
        probs = torch.softmax(F.linear(x, self.weight).float(), dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), experts


class Experts(nn.Module):
    """All routed experts as two stacked tensors (the fused layout; per-expert files load into it).

    gate_up_proj [E, 2*I, H] holds each expert's gate rows then its up rows; down_proj [E, H, I].
    """

    def __init__(self, text: TextConfig):
        super().__init__()
        experts, hidden, inter = text.num_experts, text.hidden_size, text.moe_intermediate_size
        self.num_experts = experts
        self.gate_up_proj = nn.Parameter(torch.empty(experts, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(experts, hidden, inter))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, kernels: KernelSet) -> torch.Tensor:
        """x [N, H] through each token's chosen experts [N, k], mixed by the routing weights [N, k]."""
        num_tokens, top_k = experts.shape
        # Sort the N*k (token, slot) pairs by expert: each expert runs one matmul over a contiguous run.
        order = experts.flatten().argsort()
        tokens = order // top_k
        counts = torch.bincount(experts.flatten(), minlength=self.num_experts).tolist()
        results = x.new_empty(num_tokens * top_k, x.shape[-1])
        start = 0
        for expert, count in enumerate(counts):
            if count:
                rows = slice(start, start + count)
                gate_up = F.linear(x[tokens[rows]], self.gate_up_proj[expert])
                results[rows] = F.linear(kernels.silu_mul(gate_up), self.down_proj[expert])
                start += count
        # Back to (token, slot) order by a gather, then the weighted sum over each token's k slots.
        per_slot = results.index_select(0, order.argsort()).view(num_tokens, top_k, -1)
        return (per_slot * weights[..., None]).sum(dim=1)


class SparseMoeBlock(nn.Module):
    """Routed experts plus a shared expert scaled by sigmoid(shared_expert_gate(x))."""

    def __init__(self, text: TextConfig):
        super().__init__()
        self.gate = Router(text)
        self.experts = Experts(text)
        self.shared_expert = MLP(text.hidden_size, text.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(text.hidden_size, 1, bias=False)

    def forward(self, x: torch.Tensor, kernels: KernelSet) -> torch.Tensor:
        """x [N, H] -> [N, H]."""
        weights, experts = self.gate(x)
        routed = self.experts(x, weights, experts, kernels)
        return routed + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x, kernels)
