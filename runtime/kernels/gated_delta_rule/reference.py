"""Gated delta rule in plain torch, with the Triton kernels' signatures.

Per value head the state S is a [Dk, Dv] matrix kept in fp32. One token t does
    S <- exp(g_t) * S
    u_t = beta_t * (v_t - S^T k_t)
    S <- S + k_t u_t^T
    o_t = S^T q_t
with q, k L2-normalised and q scaled by Dk^-0.5. Key heads serve Hv // Hk consecutive value
heads (repeat_interleave), as in Qwen3.5 where 16 key heads feed 16, 32, 48 or 64 value heads.
The gates come from the layer's raw projections: g = -exp(A_log) * softplus(a + dt_bias) (the
log-decay, in fp32) and beta = sigmoid(b) (`gdn_gates`, the one place they are computed on this
side; the Triton kernels compute the same in registers).

Every op reads the state from a slot pool [num_slots, Hv, Dk, Dv] (fp32) through per-sequence
slot ids, as the Triton kernels do:
  - prefill (`chunk_gated_delta_rule_varlen`): packed tokens split by cu_seqlens, the chunked
    form, each sequence's final state written back to its slot;
  - decode (`fused_recurrent_gated_delta_rule_update`): one token per sequence;
  - verify / commit (speculation): T tokens per row, outputs without touching the pool, then
    the first accepted[b] of them applied to the slot.
A negative slot is padding: prefill starts it from zero state and keeps nothing; decode and
verify rows of it are zero and the pool is left alone. Outputs come back in v's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Matches the epsilon of the l2norm in flash-linear-attention and transformers.
L2NORM_EPS = 1e-6


def gdn_gates(a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor,
              dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-decay g in fp32, beta in b's dtype) from the raw in_proj_a / in_proj_b outputs [..., Hv]."""
    # fp32 whatever the model dtype: exp(A_log) overflows bf16's precision budget.
    return -A_log.float().exp() * F.softplus(a.float() + dt_bias.float()), b.sigmoid()


def l2_normalize(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dimension."""
    return x * torch.rsqrt(x.square().sum(dim=-1, keepdim=True) + eps)


def _prepare(q, k, v, g, beta, scale: float | None):
    """fp32, heads-first [B, H, T, D] tensors with key heads expanded to the value heads."""
    num_k_heads, num_v_heads = k.shape[2], v.shape[2]
    if num_v_heads % num_k_heads:
        raise ValueError(f"value heads ({num_v_heads}) must be a multiple of key heads ({num_k_heads})")
    q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))
    g, beta = (x.transpose(1, 2).float() for x in (g, beta))
    q, k = l2_normalize(q), l2_normalize(k)
    q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    group = num_v_heads // num_k_heads
    if group > 1:
        q = q.repeat_interleave(group, dim=1)
        k = k.repeat_interleave(group, dim=1)
    return q, k, v, g, beta


def _recurrent(q, k, v, g, beta, state, scale=None):
    """Token by token over [B, T, ...] inputs from state [B, Hv, Dk, Dv]: (out [B, T, Hv, Dv] fp32, final state).

    An fp32 `state` is updated in place (callers pass their own gathered copy): one pass over the
    state per operation instead of a new tensor each, which is most of a CPU decode step's GDN time.
    """
    q, k, v, g, beta = _prepare(q, k, v, g, beta, scale)
    state = state.float()
    batch, heads, _, dk = k.shape
    flat = state.view(batch * heads, dk, state.shape[-1])
    outputs = []
    for t in range(k.shape[2]):
        state.mul_(g[:, :, t, None, None].exp())
        predicted = torch.einsum("bhkv,bhk->bhv", state, k[:, :, t])
        update = beta[:, :, t, None] * (v[:, :, t] - predicted)
        flat.baddbmm_(k[:, :, t].reshape(batch * heads, dk, 1), update.reshape(batch * heads, 1, -1))
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
    out = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return out.transpose(1, 2).contiguous(), state


def _chunked(q, k, v, g, beta, state, chunk_size: int, scale=None):
    """The chunked form over [B, T, ...] inputs from state [B, Hv, Dk, Dv]: (out fp32, final state).

    Within a chunk, with G_t = sum of g up to t and S0 the state entering the chunk, the
    delta-rule updates u solve the unit lower-triangular system
        u_t + beta_t * sum_{s<t} exp(G_t - G_s) (k_t . k_s) u_s = beta_t (v_t - exp(G_t) S0^T k_t)
    so u = W - C S0 with W, C independent of S0 (one triangular solve per chunk, in parallel);
    only the cheap S0-dependent part runs sequentially over chunks.
    """
    q, k, v, g, beta = _prepare(q, k, v, g, beta, scale)
    batch, heads, length, _ = k.shape
    dv = v.shape[-1]
    state = state.float()
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
    return out.transpose(1, 2), state


def _slot_states(state_pool: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(live [B] bool, the slots' states [B, Hv, Dk, Dv], zero for padding)."""
    live = slots >= 0
    states = state_pool.index_select(0, slots.long().clamp(min=0)).float()
    if not bool(live.all()):
        states.masked_fill_(~live[:, None, None, None], 0.0)
    return live, states


def _store_states(state_pool: torch.Tensor, slots: torch.Tensor, live: torch.Tensor, states: torch.Tensor) -> None:
    """Write the live rows' states back to their slots."""
    if bool(live.all()):
        state_pool.index_copy_(0, slots.long(), states.to(state_pool.dtype))
    elif bool(live.any()):
        state_pool.index_copy_(0, slots.long()[live], states[live].to(state_pool.dtype))


def chunk_gated_delta_rule_varlen(q, k, v, a, b, A_log, dt_bias, cu_seqlens, state_pool, slots,
                                  scale: float | None = None, out: torch.Tensor | None = None,
                                  chunk_size: int = 64) -> torch.Tensor:
    """Packed prefill of q, k [T, Hk, Dk], v [T, Hv, Dv], raw a, b [T, Hv]; state_pool[slots[b]] in and out."""
    g, beta = gdn_gates(a, b, A_log, dt_bias)
    out = v.new_empty(v.shape) if out is None else out
    bounds = cu_seqlens.tolist()
    for i, slot in enumerate(slots.tolist()):
        part = slice(bounds[i], bounds[i + 1])
        initial = state_pool[slot][None] if slot >= 0 else state_pool.new_zeros(1, *state_pool.shape[1:])
        o, state = _chunked(q[None, part], k[None, part], v[None, part], g[None, part], beta[None, part],
                            initial, chunk_size, scale)
        out[part] = o[0].to(out.dtype)
        if slot >= 0:
            state_pool[slot] = state[0]
    return out


def fused_recurrent_gated_delta_rule_update(q, k, v, a, b, A_log, dt_bias, state_pool, slots,
                                            scale: float | None = None,
                                            out: torch.Tensor | None = None) -> torch.Tensor:
    """One decode step for q, k [B, Hk, Dk], v [B, Hv, Dv], raw a, b [B, Hv]; updates state_pool[slots] in place."""
    g, beta = gdn_gates(a, b, A_log, dt_bias)
    live, states = _slot_states(state_pool, slots)
    o, states = _recurrent(q[:, None], k[:, None], v[:, None], g[:, None], beta[:, None], states, scale)
    _store_states(state_pool, slots, live, states)
    result = (o[:, 0] * live[:, None, None]).to(v.dtype)
    if out is None:
        return result
    out.copy_(result)
    return out


def fused_recurrent_gated_delta_rule_verify(q, k, v, a, b, A_log, dt_bias, state_pool, slots,
                                            scale: float | None = None) -> torch.Tensor:
    """Outputs [B, T, Hv, Dv] of T tokens per row ([B, T, ...] inputs) from state_pool[slots[b]]; not written."""
    g, beta = gdn_gates(a, b, A_log, dt_bias)
    live, states = _slot_states(state_pool, slots)
    o, _ = _recurrent(q, k, v, g, beta, states, scale)
    return (o * live[:, None, None, None]).to(v.dtype)


def fused_recurrent_gated_delta_rule_commit(q, k, v, a, b, A_log, dt_bias, state_pool, slots,
                                            accepted: torch.Tensor) -> None:
    """Advance state_pool[slots[b]] in place by the first accepted[b] (0..T) of the verify's tokens."""
    g, beta = gdn_gates(a, b, A_log, dt_bias)
    # Tokens past accepted[b] get log-decay 0 and beta 0: an exact identity update of the state.
    keep = (torch.arange(q.shape[1], device=q.device)[None, :] < accepted.to(q.device)[:, None])[..., None]
    live, states = _slot_states(state_pool, slots)
    _, states = _recurrent(q, k, v, g.masked_fill(~keep, 0.0), beta.masked_fill(~keep, 0.0), states)
    _store_states(state_pool, slots, live, states)
