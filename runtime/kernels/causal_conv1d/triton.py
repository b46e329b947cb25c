"""Depthwise causal conv1d (+ SiLU) in Triton over packed variable-length batches and one-token steps.

Layout, as in the reference: tokens are rows, x [T, D] with channels contiguous (a row stride
other than D is fine, e.g. a view into a wider projection output); weight [D, K]; the conv
state of a sequence holds its last K-1 inputs, oldest first, in a pool [num_slots, D, K-1]
addressed by a per-sequence slot index. A negative slot marks a padding entry (a CUDA-graph
batch slot with no sequence): nothing is read from or written to the pool for it and its
output is zero.

Prefill is two launches. The conv itself runs over (token block, channel block) tiles, so a
single long prompt still fills the GPU; each tap is one shifted, masked load of x (the shifted
tiles overlap and hit L1), falling back to the initial state for positions before the start.
The final state is written by a second, tiny launch: writing it from the first would race with
the tile that is still reading the initial state of the same slot.

Speculation's verify (`causal_conv1d_verify`) runs the conv over T tokens per row from the pool's
state without writing it, one launch with a [T, channels] tile per program, and also writes the
window [old conv state | T inputs] that the commit slices the new state from (one gather).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_T = 32
_BLOCK_D = 128
# Qwen3.5's conv kernel size; the kernels name the three state columns.
_WIDTH = 4


@triton.jit
def _conv_varlen_kernel(x_ptr, w_ptr, out_ptr, state_ptr, cu_ptr, slot_ptr, block_seq_ptr, block_start_ptr,
                        dim, stride_x, stride_out, stride_w, stride_s_slot, stride_s_dim,
                        APPLY_SILU: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    seq = tl.load(block_seq_ptr + tl.program_id(0))
    first = tl.load(block_start_ptr + tl.program_id(0))
    seq_start = tl.load(cu_ptr + seq)
    seq_end = tl.load(cu_ptr + seq + 1)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    tokens = first + tl.arange(0, BLOCK_T)
    chans = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tok_ok = tokens < seq_end
    chan_ok = chans < dim
    # The three inputs before the sequence start, from the initial state (oldest first). Only
    # the first tile of a sequence needs them, but three vector loads cost less than a branch.
    state_ok = tl.where((slot >= 0) & (first == seq_start), chan_ok, False)
    state_row = state_ptr + slot * stride_s_slot + chans * stride_s_dim
    before3 = tl.load(state_row, mask=state_ok, other=0.0).to(tl.float32)
    before2 = tl.load(state_row + 1, mask=state_ok, other=0.0).to(tl.float32)
    before1 = tl.load(state_row + 2, mask=state_ok, other=0.0).to(tl.float32)
    w_row = w_ptr + chans * stride_w
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    for j in tl.static_range(4):
        src = tokens - (3 - j)  # input position feeding tap j
        xv = tl.load(x_ptr + src.to(tl.int64)[:, None] * stride_x + chans[None, :],
                     mask=(tok_ok & (src >= seq_start))[:, None] & chan_ok[None, :], other=0.0).to(tl.float32)
        back = (seq_start - src)[:, None]  # 1..3 before the start: a state column
        xv = tl.where(back == 1, before1[None, :], tl.where(back == 2, before2[None, :],
                                                            tl.where(back == 3, before3[None, :], xv)))
        acc += xv * tl.load(w_row + j, mask=chan_ok, other=0.0).to(tl.float32)[None, :]
    if APPLY_SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + tokens.to(tl.int64)[:, None] * stride_out + chans[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=tok_ok[:, None] & chan_ok[None, :])


@triton.jit
def _final_column(x_ptr, state_row, stride_x, chans, ok, seq_start, src):
    """Input at position src of the sequence: from x, or from the old state before the start."""
    xv = tl.load(x_ptr + src.to(tl.int64) * stride_x + chans, mask=ok & (src >= seq_start), other=0.0)
    sv = tl.load(state_row + (3 + src - seq_start), mask=ok & (src < seq_start), other=0.0)
    return tl.where(src >= seq_start, xv.to(tl.float32), sv.to(tl.float32))


@triton.jit
def _conv_final_state_kernel(x_ptr, state_ptr, cu_ptr, slot_ptr, dim, stride_x, stride_s_slot, stride_s_dim,
                             BLOCK_D: tl.constexpr):
    seq = tl.program_id(0)
    seq_start = tl.load(cu_ptr + seq)
    seq_end = tl.load(cu_ptr + seq + 1)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    chans = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = tl.where(slot >= 0, chans < dim, False)
    state_row = state_ptr + slot * stride_s_slot + chans * stride_s_dim
    # New column i holds input position seq_end - 3 + i; a short sequence keeps old columns.
    # Every column is loaded before any is stored, by the thread that owns the channel.
    col0 = _final_column(x_ptr, state_row, stride_x, chans, ok, seq_start, seq_end - 3)
    col1 = _final_column(x_ptr, state_row, stride_x, chans, ok, seq_start, seq_end - 2)
    col2 = _final_column(x_ptr, state_row, stride_x, chans, ok, seq_start, seq_end - 1)
    tl.store(state_row, col0.to(state_ptr.dtype.element_ty), mask=ok)
    tl.store(state_row + 1, col1.to(state_ptr.dtype.element_ty), mask=ok)
    tl.store(state_row + 2, col2.to(state_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _conv_update_kernel(x_ptr, w_ptr, out_ptr, state_ptr, slot_ptr, dim, stride_x, stride_out, stride_w,
                        stride_s_slot, stride_s_dim, APPLY_SILU: tl.constexpr,
                        BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    slot = tl.load(slot_ptr + row).to(tl.int64)
    chans = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    chan_ok = chans < dim
    ok = tl.where(slot >= 0, chan_ok, False)
    state_row = state_ptr + slot * stride_s_slot + chans * stride_s_dim
    x = tl.load(x_ptr + row.to(tl.int64) * stride_x + chans, mask=ok, other=0.0).to(tl.float32)
    s0 = tl.load(state_row, mask=ok, other=0.0).to(tl.float32)
    s1 = tl.load(state_row + 1, mask=ok, other=0.0).to(tl.float32)
    s2 = tl.load(state_row + 2, mask=ok, other=0.0).to(tl.float32)
    w_row = w_ptr + chans * stride_w
    acc = (s0 * tl.load(w_row, mask=chan_ok, other=0.0).to(tl.float32)
           + s1 * tl.load(w_row + 1, mask=chan_ok, other=0.0).to(tl.float32)
           + s2 * tl.load(w_row + 2, mask=chan_ok, other=0.0).to(tl.float32)
           + x * tl.load(w_row + 3, mask=chan_ok, other=0.0).to(tl.float32))
    if APPLY_SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(state_row, s1.to(state_ptr.dtype.element_ty), mask=ok)
    tl.store(state_row + 1, s2.to(state_ptr.dtype.element_ty), mask=ok)
    tl.store(state_row + 2, x.to(state_ptr.dtype.element_ty), mask=ok)
    tl.store(out_ptr + row.to(tl.int64) * stride_out + chans,
             tl.where(slot >= 0, acc, 0.0).to(out_ptr.dtype.element_ty), mask=chan_ok)


def _check(x, weight, state_pool, slots):
    dim, width = weight.shape
    if width != _WIDTH or weight.stride(1) != 1:
        raise ValueError(f"weight must be [D, {_WIDTH}] with taps contiguous (Qwen3.5's conv), "
                         f"got {tuple(weight.shape)}")
    if x.shape[-1] != dim or x.stride(-1) != 1:
        raise ValueError(f"x needs {dim} contiguous channels, got shape {tuple(x.shape)}")
    if state_pool.shape[1:] != (dim, width - 1) or state_pool.stride(2) != 1:
        raise ValueError(f"state pool must be [slots, {dim}, {width - 1}] with the last dim contiguous, "
                         f"got {tuple(state_pool.shape)}")
    if slots.dtype not in (torch.int32, torch.int64):
        raise ValueError("slots must be an integer tensor")


def _activation_flag(activation: str | None) -> bool:
    if activation in ("silu", "swish"):
        return True
    if activation is None:
        return False
    raise ValueError(f"unsupported activation {activation!r}")


def token_blocks(cu_seqlens: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, first token) of every `block`-token tile of a packed batch, int32."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    counts = (lengths + block - 1) // block
    seq = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), counts)
    first_tile = torch.cumsum(counts, 0) - counts
    index_in_seq = torch.arange(len(seq), device=cu_seqlens.device) - first_tile[seq]
    return seq.to(torch.int32), (cu_seqlens[seq] + index_in_seq * block).to(torch.int32)


def causal_conv1d_varlen(x: torch.Tensor, weight: torch.Tensor, cu_seqlens: torch.Tensor,
                         state_pool: torch.Tensor, slots: torch.Tensor, activation: str | None = "silu",
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Packed prefill: x [T, D] split by cu_seqlens [B+1]; reads and rewrites state_pool[slots[b]]."""
    _check(x, weight, state_pool, slots)
    apply_silu = _activation_flag(activation)
    dim, width = weight.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    cu = cu_seqlens.to(torch.int32)
    num_seqs = cu.numel() - 1
    block_seq, block_start = token_blocks(cu, _BLOCK_T)
    chan_blocks = triton.cdiv(dim, _BLOCK_D)
    if block_seq.numel():
        _conv_varlen_kernel[(block_seq.numel(), chan_blocks)](
            x, weight, out, state_pool, cu, slots, block_seq, block_start,
            dim, x.stride(0), out.stride(0), weight.stride(0), state_pool.stride(0), state_pool.stride(1),
            APPLY_SILU=apply_silu, BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D, num_warps=4)
    if num_seqs:
        _conv_final_state_kernel[(num_seqs, chan_blocks)](
            x, state_pool, cu, slots, dim, x.stride(0), state_pool.stride(0), state_pool.stride(1),
            BLOCK_D=_BLOCK_D, num_warps=4)
    return out


def causal_conv1d_update(x: torch.Tensor, weight: torch.Tensor, state_pool: torch.Tensor, slots: torch.Tensor,
                         activation: str | None = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """One decode step: x [B, D]; shifts state_pool[slots[b]] in place; returns [B, D]."""
    _check(x, weight, state_pool, slots)
    apply_silu = _activation_flag(activation)
    dim, width = weight.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    if x.shape[0]:
        _conv_update_kernel[(x.shape[0], triton.cdiv(dim, _BLOCK_D))](
            x, weight, out, state_pool, slots, dim, x.stride(0), out.stride(0), weight.stride(0),
            state_pool.stride(0), state_pool.stride(1), APPLY_SILU=apply_silu,
            BLOCK_D=_BLOCK_D, num_warps=4)
    return out


@triton.jit
def _conv_verify_kernel(x_ptr, w_ptr, state_ptr, slot_ptr, out_ptr, window_ptr, dim, length,
                        stride_x_row, stride_x_tok, stride_out_row, stride_out_tok, stride_w,
                        stride_s_slot, stride_s_dim, stride_win_row, stride_win_dim,
                        APPLY_SILU: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    slot = tl.load(slot_ptr + row).to(tl.int64)
    tokens = tl.arange(0, BLOCK_T)
    chans = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tok_ok = tokens < length
    chan_ok = chans < dim
    state_ok = tl.where(slot >= 0, chan_ok, False)
    state_row = state_ptr + slot * stride_s_slot + chans * stride_s_dim
    row64 = row.to(tl.int64)
    x_row = x_ptr + row64 * stride_x_row + chans
    window_row = window_ptr + row64 * stride_win_row + chans * stride_win_dim
    # The window: the three inputs before the row's first token (oldest first), then its T inputs.
    for j in tl.static_range(3):
        tl.store(window_row + j, tl.load(state_row + j, mask=state_ok, other=0.0).to(window_ptr.dtype.element_ty),
                 mask=chan_ok)
    x = tl.load(x_row[None, :] + tokens[:, None] * stride_x_tok, mask=tok_ok[:, None] & chan_ok[None, :], other=0.0)
    tl.store(window_row[None, :] + 3 + tokens[:, None], x.to(window_ptr.dtype.element_ty),
             mask=tok_ok[:, None] & chan_ok[None, :])
    # Tap j of token t reads input t - (3 - j): from x, or from state column 3 + t - (3 - j) before it.
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    for j in tl.static_range(4):
        src = tokens - (3 - j)
        if j == 3:
            xv = x.to(tl.float32)
        else:
            xv = tl.load(x_row[None, :] + src[:, None] * stride_x_tok,
                         mask=(tok_ok & (src >= 0))[:, None] & chan_ok[None, :], other=0.0).to(tl.float32)
            sv = tl.load(state_row[None, :] + (3 + src)[:, None],
                         mask=(tok_ok & (src < 0))[:, None] & state_ok[None, :], other=0.0).to(tl.float32)
            xv = tl.where(src[:, None] >= 0, xv, sv)
        acc += xv * tl.load(w_ptr + chans * stride_w + j, mask=chan_ok, other=0.0).to(tl.float32)[None, :]
    if APPLY_SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + row64 * stride_out_row + tokens[:, None] * stride_out_tok + chans[None, :],
             tl.where(slot >= 0, acc, 0.0).to(out_ptr.dtype.element_ty), mask=tok_ok[:, None] & chan_ok[None, :])


def causal_conv1d_verify(x: torch.Tensor, weight: torch.Tensor, conv_pool: torch.Tensor, slots: torch.Tensor,
                         activation: str | None = "silu") -> tuple[torch.Tensor, torch.Tensor]:
    """Conv of x [B, T, D] after conv_pool[slots[b]] (not written): (out [B, T, D], window [B, D, 3 + T]).

    The window is [old state | T inputs] in the pool's dtype: after a tokens the new conv state is
    window[:, :, a : a + 3].
    """
    rows, length, dim = x.shape
    if weight.shape != (dim, _WIDTH) or weight.stride(1) != 1:
        raise ValueError(f"weight must be [{dim}, {_WIDTH}] with taps contiguous (Qwen3.5's conv), "
                         f"got {tuple(weight.shape)}")
    if x.stride(-1) != 1:
        raise ValueError("x needs contiguous channels")
    if conv_pool.shape[1:] != (dim, _WIDTH - 1) or conv_pool.stride(2) != 1:
        raise ValueError(f"conv pool must be [slots, {dim}, {_WIDTH - 1}] with the last dim contiguous, "
                         f"got {tuple(conv_pool.shape)}")
    if slots.shape != (rows,) or slots.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slots must be {rows} integer slot ids, got {slots.dtype} {tuple(slots.shape)}")
    if activation not in ("silu", "swish", None):
        raise ValueError(f"unsupported activation {activation!r}")
    out = torch.empty(rows, length, dim, dtype=x.dtype, device=x.device)
    window = torch.empty(rows, dim, _WIDTH - 1 + length, dtype=conv_pool.dtype, device=x.device)
    if rows:
        _conv_verify_kernel[(rows, triton.cdiv(dim, _BLOCK_D))](
            x, weight, conv_pool, slots, out, window, dim, length,
            x.stride(0), x.stride(1), out.stride(0), out.stride(1), weight.stride(0),
            conv_pool.stride(0), conv_pool.stride(1), window.stride(0), window.stride(1),
            APPLY_SILU=activation is not None, BLOCK_T=triton.next_power_of_2(max(length, 1)),
            BLOCK_D=_BLOCK_D, num_warps=4)
    return out, window
