"""Main-model forwards for speculative decoding: hidden states out, and a verify call whose
linear-attention state is committed afterwards for the accepted tokens only.

A verify call runs each row's last token and its k drafts (T = k + 1 tokens) through the
model. Full-attention KV written for rejected drafts is harmless: the row's length rolls
back and nothing reads a row past its length. Gated DeltaNet state is not: conv and
recurrent state would have absorbed the rejected drafts. So the verify call reads each row's
GDN state without writing it back and keeps, per GDN layer, the call's per-token inputs: the
pre-conv projections (as the window [old conv state | T new inputs]) and q, k, v, decay and
beta (a few KiB per token). `commit_accepted` then rebuilds each row's state from the
untouched pre-verify state over its first `accepted` tokens: the conv state is a slice of
the window, the recurrent state one more pass of the recurrence in which the tokens past
`accepted` get beta = 0 and log-decay = 0, an exact identity update (S * exp(0) + k * 0).

Recompute rather than per-token snapshots: the extra pass reads and writes each row's
state once per layer and reads no weights, whereas snapshots would store k + 1 fp32 states
per GDN layer per row (0.8B, k = 3: 4 MiB per layer per row) until the accept decision.
The verify recurrence is the token-by-token rule decode uses, so the committed state is the
one plain decoding of the accepted tokens computes, up to matmul rounding of the batched
projections.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from qwen35.runtime.kernels.causal_conv1d import causal_conv1d
from qwen35.runtime.kernels.gated_delta_rule import recurrent_gated_delta_rule
from qwen35.runtime.model.cache import ModelCache, StepInfo
from qwen35.runtime.model.linear_attention import GatedDeltaNet
from qwen35.runtime.model.qwen35_model import Qwen35Model


@dataclass
class DeferredLinearState:
    """One GDN layer's inputs from a verify call: enough to advance its state by any prefix."""

    window: torch.Tensor  # [B, conv_dim, K-1+T]: the rows' conv state, then the T new conv inputs
    query: torch.Tensor  # [B, T, Hk, Dk]
    key: torch.Tensor  # [B, T, Hk, Dk]
    value: torch.Tensor  # [B, T, Hv, Dv]
    log_decay: torch.Tensor  # [B, T, Hv] fp32
    beta: torch.Tensor  # [B, T, Hv]


@dataclass
class VerifyOutput:
    """Logits and final-normed hidden states of every verified position, and the deferred GDN inputs."""

    logits: torch.Tensor  # [B, T, V]
    hidden: torch.Tensor  # [B, T, H]
    step: StepInfo
    linear: dict[int, DeferredLinearState] = field(default_factory=dict)


def forward_hidden(model: Qwen35Model, cache: ModelCache, rows: list[int], tokens: torch.Tensor) -> torch.Tensor:
    """Append tokens [B, T] to cache rows like model(tokens, cache, rows); the final-normed hidden [B, T, H]."""
    step = cache.begin(rows, tokens.shape[1])
    hidden = model.language_model(tokens, cache, step, step.rope_positions)
    cache.commit(step)
    return hidden


def verify_forward(model: Qwen35Model, cache: ModelCache, rows: list[int], tokens: torch.Tensor) -> VerifyOutput:
    """Run tokens [B, T] after cache rows without committing lengths or GDN state (see commit_accepted)."""
    text = model.language_model
    step = cache.begin(rows, tokens.shape[1])
    positions = step.positions if step.rope_positions is None else step.rope_positions
    hidden = text.embed_tokens(tokens)
    rope = text.rotary(positions, hidden.dtype)
    linear: dict[int, DeferredLinearState] = {}
    # DecoderLayer.forward, with the GDN mixer swapped for its deferred-state twin.
    for layer in text.layers:
        normed = layer.input_layernorm(hidden)
        if layer.is_full_attention:
            hidden = hidden + layer.self_attn(normed, rope, cache, step)
        else:
            mixed, linear[layer.linear_attn.layer_idx] = _linear_attention(layer.linear_attn, normed, cache, step)
            hidden = hidden + mixed
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    hidden = text.norm(hidden)
    return VerifyOutput(model.compute_logits(hidden), hidden, step, linear)


def _linear_attention(gdn: GatedDeltaNet, hidden: torch.Tensor, cache: ModelCache,
                      step: StepInfo) -> tuple[torch.Tensor, DeferredLinearState]:
    """GatedDeltaNet.forward over cached rows, reading their state but not writing it."""
    batch, length, _ = hidden.shape
    mixed = gdn.in_proj_qkv(hidden)
    gate = gdn.in_proj_z(hidden).reshape(batch, length, gdn.num_v_heads, gdn.head_v_dim)
    beta = gdn.in_proj_b(hidden).sigmoid()
    log_decay = -gdn.A_log.float().exp() * F.softplus(gdn.in_proj_a(hidden).float() + gdn.dt_bias.float())

    conv_weight = gdn.conv1d.weight.squeeze(1)
    conv_state = cache.read_state(cache.conv, gdn.layer_idx, step)
    recurrent_state = cache.read_state(cache.recurrent, gdn.layer_idx, step)
    conv_out, _ = causal_conv1d(mixed, conv_weight, conv_state)
    query, key, value = conv_out.split([gdn.key_dim, gdn.key_dim, gdn.value_dim], dim=-1)
    query = query.reshape(batch, length, gdn.num_k_heads, gdn.head_k_dim)
    key = key.reshape(batch, length, gdn.num_k_heads, gdn.head_k_dim)
    value = value.reshape(batch, length, gdn.num_v_heads, gdn.head_v_dim)
    core, _ = recurrent_gated_delta_rule(query, key, value, log_decay, beta, initial_state=recurrent_state)

    window = torch.cat([conv_state.to(conv_weight.dtype), mixed.transpose(1, 2).to(conv_weight.dtype)], dim=-1)
    deferred = DeferredLinearState(window, query, key, value, log_decay, beta)
    core = gdn.norm(core, gate).reshape(batch, length, gdn.value_dim)
    return gdn.out_proj(core), deferred


def commit_accepted(cache: ModelCache, verify: VerifyOutput, accepted: torch.Tensor) -> None:
    """Keep the first accepted[b] (1..T) verified tokens of each row: lengths, conv and recurrent state."""
    step = verify.step
    length = step.num_tokens
    accepted = accepted.to(device=step.rows.device, dtype=torch.long)
    keep = (torch.arange(length, device=accepted.device)[None, :] < accepted[:, None])[..., None]  # [B, T, 1]
    for layer, deferred in verify.linear.items():
        window = deferred.window
        width = window.shape[-1] - length  # kernel - 1
        # After a tokens the conv state is window[..., a : a + K-1]: the last K-1 inputs seen.
        index = (accepted[:, None] + torch.arange(width, device=accepted.device))[:, None, :]
        conv = window.gather(2, index.expand(-1, window.shape[1], -1))
        initial = cache.read_state(cache.recurrent, layer, step)
        _, recurrent = recurrent_gated_delta_rule(
            deferred.query, deferred.key, deferred.value,
            deferred.log_decay.masked_fill(~keep, 0.0), deferred.beta.masked_fill(~keep, 0.0),
            initial_state=initial)
        cache.write_state(cache.conv, layer, step, conv.to(cache.conv[layer].dtype))
        cache.write_state(cache.recurrent, layer, step, recurrent)
    starts = (step.seq_lens - length).tolist()
    for row, start, count in zip(step.rows.tolist(), starts, accepted.tolist()):
        cache.lengths[row] = start + count
