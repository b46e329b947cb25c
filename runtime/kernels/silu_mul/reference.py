"""SiLU-and-multiply in plain torch: x [..., 2I] holds gate then up; out [..., I] = silu(gate) * up."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :I]) * x[..., I:] in x's dtype, as the unfused MLP computes it."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
