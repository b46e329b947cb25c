"""Gated delta rule in plain torch: the chunked form for prefill, the recurrent form for decode.

Per value head the state S is a [Dk, Dv] matrix kept in fp32. One token t does
    S <- exp(g_t) * S
    u_t = beta_t * (v_t - S^T k_t)
    S <- S + k_t u_t^T
    o_t = S^T q_t
with q, k L2-normalised and q scaled by Dk^-0.5. Key heads serve Hv // Hk consecutive value
heads (repeat_interleave), as in Qwen3.5 where 16 key heads feed 16, 32, 48 or 64 value heads.

Shapes: q, k [B, T, Hk, Dk]; v [B, T, Hv, Dv]; g (log-decay, <= 0) and beta [B, T, Hv];
state [B, Hv, Dk, Dv] fp32. Outputs come back as [B, T, Hv, Dv] in q's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Matches the epsilon of the l2norm in flash-linear-attention and transformers.
L2NORM_EPS = 1e-6


def l2_normalize(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dimension."""
    return x * torch.rsqrt(x.square().sum(dim=-1, keepdim=True) + eps)


def _prepare(q, k, v, g, beta, use_qk_l2norm: bool, scale: float | None):
    """fp32, heads-first [B, H, T, D] tensors with key heads expanded to the value heads."""
    num_k_heads, num_v_heads = k.shape[2], v.shape[2]
    if num_v_heads % num_k_heads:
        raise ValueError(f"value heads ({num_v_heads}) must be a multiple of key heads ({num_k_heads})")
    q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))
    g, beta = (x.transpose(1, 2).float() for x in (g, beta))
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    group = num_v_heads // num_k_heads
    if group > 1:
        q = q.repeat_interleave(group, dim=1)
        k = k.repeat_interleave(group, dim=1)
    return q, k, v, g, beta


def _initial_state(initial_state, batch, heads, dk, dv, device) -> torch.Tensor:
    if initial_state is None:
        return torch.zeros(batch, heads, dk, dv, dtype=torch.float32, device=device)
    return initial_state.float()


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    use_qk_l2norm: bool = True,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token gated delta rule (decode); returns (output, final fp32 state)."""
    out_dtype = q.dtype
    q, k, v, g, beta = _prepare(q, k, v, g, beta, use_qk_l2norm, scale)
    batch, heads, length, dk = k.shape
    state = _initial_state(initial_state, batch, heads, dk, v.shape[-1], v.device)
    outputs = []
    for t in range(length):
        state = state * g[:, :, t, None, None].exp()
        predicted = torch.einsum("bhkv,bhk->bhv", state, k[:, :, t])
        update = beta[:, :, t, None] * (v[:, :, t] - predicted)
        state = state + k[:, :, t, :, None] * update[:, :, None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
    out = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return out.transpose(1, 2).to(out_dtype), state


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    use_qk_l2norm: bool = True,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked gated delta rule (prefill); returns (output, final fp32 state).

    Within a chunk, with G_t = sum of g up to t and S0 the state entering the chunk, the
    delta-rule updates u solve the unit lower-triangular system
        u_t + beta_t * sum_{s<t} exp(G_t - G_s) (k_t . k_s) u_s = beta_t (v_t - exp(G_t) S0^T k_t)
    so u = W - C S0 with W, C independent of S0 (one triangular solve per chunk, in parallel);
    only the cheap S0-dependent part runs sequentially over chunks.
    """
    out_dtype = q.dtype
    q, k, v, g, beta = _prepare(q, k, v, g, beta, use_qk_l2norm, scale)
    batch, heads, length, dk = k.shape
    dv = v.shape[-1]
    state = _initial_state(initial_state, batch, heads, dk, dv, v.device)

    # Padding positions carry k = v = 0, beta = 0 and g = 0: u = 0 there and the state is untouched.
    pad = (-length) % chunk_size
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, pad)) for x in (g, beta))
    num_chunks = (length + pad) // chunk_size
    q, k, v = (x.reshape(batch, heads, num_chunks, chunk_size, -1) for x in (q, k, v))
    g, beta = (x.reshape(batch, heads, num_chunks, chunk_size) for x in (g, beta))

    log_decay = g.cumsum(dim=-1)  # G_t, within each chunk
    # exp(G_t - G_s) for s <= t; masked before exp so the upper triangle cannot overflow.
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    pair_log = log_decay[..., :, None] - log_decay[..., None, :]
    pair_decay = pair_log.masked_fill(~causal, float("-inf")).exp()

    key_gram = k @ k.transpose(-1, -2)
    strictly_lower = (pair_decay * key_gram * beta[..., :, None]).tril(-1)
    system = strictly_lower + torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    rhs = torch.cat([beta[..., None] * v, (beta * log_decay.exp())[..., None] * k], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    values_part, state_part = solved[..., :dv], solved[..., dv:]  # W and C

    intra = (q @ k.transpose(-1, -2)) * pair_decay  # causal q.k with decay, diagonal included
    q_decayed = q * log_decay.exp()[..., None]
    chunk_total = log_decay[..., -1]  # G at the chunk's last position
    # exp(G_last - G_s): how much of token s's write survives to the end of the chunk.
    k_to_end = k * (chunk_total[..., None] - log_decay).exp()[..., None]

    outputs = []
    for c in range(num_chunks):
        update = values_part[:, :, c] - state_part[:, :, c] @ state
        outputs.append(q_decayed[:, :, c] @ state + intra[:, :, c] @ update)
        state = state * chunk_total[:, :, c, None, None].exp() + k_to_end[:, :, c].transpose(-1, -2) @ update
    out = torch.stack(outputs, dim=2).reshape(batch, heads, -1, dv)[:, :, :length]
    return out.transpose(1, 2).to(out_dtype), state
