"""MTP speculative decoding over the paged pools: `PagedModelRunner` plus `speculate`.

One `speculate` step is SpeculativeRunner's (speculative.py: draft, verify, accept, commit);
only where the main model's state lives differs:
  - verify: each row's [t_L, d_1 .. d_k] run as one packed batch of T = k + 1 tokens per row.
    Full-attention K/V go to pages grown for the T tokens (as a prefill chunk's do); Gated
    DeltaNet state is read from the row's slot but not written, and each GDN layer keeps its
    inputs (DeferredRawGates), as verify.verify_forward does;
  - commit: each row's slot gets the conv and recurrent state of its accepted prefix, rebuilt
    from the untouched slot with the rejected tokens' beta and log-decay zeroed (an exact
    identity update, as verify.commit_accepted), and `BlockManager.truncate` rolls the row's
    length back and returns pages past the kept tokens.

Design:
  - A subclass of PagedModelRunner: pools, slot and page bookkeeping, packed prefill inputs
    and decode staging are the paged runner's; prefill and decode are overridden only to get
    final-normed hidden states (which feed the MTP head) rather than logits.
  - The MTP side is SpeculativeRunner's, not a copy: this class keeps the attributes its
    drafting helpers read (model, device, num_speculative_tokens, draft_cache, pending_hidden,
    pending_ids, pending_count) and borrows `_feed_mtp`, `_run_mtp` and `_draft`. The head is
    one layer, so its KV stays the eager per-row DraftCache rather than a second page pool.
  - Prefill chunks feed the head row by row (one small MTP forward per chunk, as
    SpeculativeRunner.prefill does); decode feeds all rows in one.
  - Verify and commit are ops of the kernel set (conv_verify, gdr_verify, gdr_commit): on the
    Triton set one launch each per GDN layer (kernels/gated_delta_rule/triton_verify.py; the
    commit re-runs the accepted tokens only, from the raw gate projections kept); on the torch
    set the references (causal_conv1d, recurrent_gated_delta_rule with the rejected tokens'
    gates zeroed). No CUDA graph for the verify. Decode keeps the selected kernels and its CUDA graphs, captured around
    `_run_decode` which here returns hidden states (the logits matmul runs after the replay).
  - Text only: speculation takes no images or videos (SpeculativeRunner neither), so a
    prefill chunk with media is refused; every row's rope delta stays 0.

Capacity: rows hold max_len + k + 1 tokens (pages and the draft cache), since a verify writes up
to k positions past the tokens that will be kept. `max_len` is what a sequence may reach.
`main_forwards` counts packed prefill calls, decodes and verifies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from qwen35.runtime.engine.cuda_graphs import DecodeGraphs, graph_batch_sizes
from qwen35.runtime.engine.paged_model import DecodeBatch, PagedTextModel, PrefillBatch
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.speculative import SpeculativeRunner
from qwen35.runtime.model.linear_attention import GatedDeltaNet
from qwen35.runtime.model.qwen35_model import Qwen35Model


@dataclass
class VerifyBatch(PrefillBatch):
    """A prefill batch of num_tokens tokens per row whose GDN layers defer their state update."""

    num_tokens: int = 1  # T = k + 1, the same for every row
    linear: dict[int, DeferredRawGates] = field(default_factory=dict)  # filled by the forward


@dataclass
class DeferredRawGates:
    """A GDN layer's verify inputs, kept for the commit (which computes the gates from a and b)."""

    window: torch.Tensor  # [B, conv_dim, K-1+T]: the rows' conv state, then the T new conv inputs
    query: torch.Tensor  # [B, T, Hk, Dk], views into the conv output
    key: torch.Tensor  # [B, T, Hk, Dk]
    value: torch.Tensor  # [B, T, Hv, Dv]
    a: torch.Tensor  # [B, T, Hv] raw in_proj_a output
    b: torch.Tensor  # [B, T, Hv] raw in_proj_b output
    A_log: torch.Tensor  # [Hv], the layer's parameters
    dt_bias: torch.Tensor  # [Hv]


class PagedHiddenModel(PagedTextModel):
    """PagedTextModel with final-normed hidden states out, and the deferred-state verify forward."""

    def prefill_hidden(self, batch: PrefillBatch) -> torch.Tensor:
        """Hidden states [N, H] of every packed token; writes KV and (unless a VerifyBatch) GDN state."""
        return self._final_norm(*self._layers(self.text.embed_tokens(batch.token_ids), batch.positions, batch,
                                              decode=False))

    def decode_hidden(self, batch: DecodeBatch) -> torch.Tensor:
        """Hidden states [B, H] for one token per sequence; writes KV and state (CUDA-graph safe)."""
        return self._final_norm(*self._layers(self.text.embed_tokens(batch.token_ids), batch.positions, batch,
                                              decode=True))

    def _final_norm(self, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.text.norm
        return self.kernels.add_rmsnorm(out, residual, norm.weight, norm.eps)[0]

    def _linear_attention(self, gdn: GatedDeltaNet, x: torch.Tensor, batch, decode: bool) -> torch.Tensor:
        if not isinstance(batch, VerifyBatch):
            return super()._linear_attention(gdn, x, batch, decode)
        # verify._linear_attention over the rows' slots: [rows, T] token grid, state read, not written.
        tokens, length = x.shape[0], batch.num_tokens
        rows = tokens // length
        mixed = gdn.in_proj_qkv(x).view(rows, length, -1)
        gate = gdn.in_proj_z(x).view(tokens, gdn.num_v_heads, gdn.head_v_dim)
        conv_weight = gdn.conv1d.weight.squeeze(1)
        conv_pool, state_pool = self.state.conv[gdn.layer_idx], self.state.recurrent[gdn.layer_idx]
        conv_out, window = self.kernels.conv_verify(mixed, conv_weight, conv_pool, batch.state_slots)
        query, key, value = conv_out.split([gdn.key_dim, gdn.key_dim, gdn.value_dim], dim=-1)
        query = query.reshape(rows, length, gdn.num_k_heads, gdn.head_k_dim)
        key = key.reshape(rows, length, gdn.num_k_heads, gdn.head_k_dim)
        value = value.reshape(rows, length, gdn.num_v_heads, gdn.head_v_dim)
        a, b = gdn.in_proj_a(x).view(rows, length, -1), gdn.in_proj_b(x).view(rows, length, -1)
        core = self.kernels.gdr_verify(query, key, value, a, b, gdn.A_log, gdn.dt_bias, state_pool, batch.state_slots)
        batch.linear[gdn.layer_idx] = DeferredRawGates(window, query, key, value, a, b, gdn.A_log, gdn.dt_bias)
        core = self.kernels.gated_rmsnorm(core.reshape(tokens, gdn.num_v_heads, gdn.head_v_dim), gate,
                                          gdn.norm.weight, gdn.norm.eps)
        return gdn.out_proj(core.reshape(tokens, gdn.value_dim))


class PagedSpeculativeRunner(PagedModelRunner):
    """The paged runner with MTP speculation: prefill and decode feed the MTP head, `speculate` drafts."""

    text_only = True  # prepare_media is inherited, but speculation takes no images or videos

    # SpeculativeRunner's drafting, over the same attributes (see the module docstring).
    _feed_mtp = SpeculativeRunner._feed_mtp
    _run_mtp = SpeculativeRunner._run_mtp
    _draft = SpeculativeRunner._draft

    def __init__(self, model: Qwen35Model, num_rows: int, max_len: int, num_speculative_tokens: int, *,
                 page_size: int = 16, num_pages: int | None = None, kernels: str = "auto",
                 cuda_graphs: bool = True, max_graph_batch: int | None = None):
        if model.mtp is None:
            raise ValueError("speculative decoding needs the checkpoint's MTP head (mtp.* tensors, "
                             "mtp_num_hidden_layers > 0); this model has none")
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        capacity = max_len + num_speculative_tokens + 1
        super().__init__(model, num_rows, capacity, page_size=page_size, num_pages=num_pages, kernels=kernels,
                         cuda_graphs=False)
        self.max_len = max_len
        self.num_speculative_tokens = num_speculative_tokens
        self.forward = PagedHiddenModel(model, self.kv, self.state, self.kernels)
        self.draft_cache = model.mtp.new_cache(num_rows, capacity)
        hidden_size = model.config.text.hidden_size
        self.pending_hidden = torch.zeros(num_rows, num_speculative_tokens + 1, hidden_size,
                                          dtype=model.language_model.embed_tokens.weight.dtype, device=self.device)
        self.pending_ids = torch.zeros(num_rows, num_speculative_tokens + 1, dtype=torch.long, device=self.device)
        self.pending_count = [0] * num_rows
        self.main_forwards = 0
        if self.device.type == "cuda" and cuda_graphs and not model.config.text.is_moe:
            # As PagedModelRunner does, but captured around this class's _run_decode (hidden states out).
            sizes = graph_batch_sizes(min(num_rows, max_graph_batch or num_rows))
            self.graphs = DecodeGraphs(self._run_decode, self.inputs, sizes)
            with torch.inference_mode():
                self.graphs.capture()

    def release_row(self, row: int) -> None:
        """Free the row's pages and state slot and forget its MTP positions."""
        super().release_row(row)
        self.draft_cache.lengths[row] = 0
        self.pending_count[row] = 0

    def prefill(self, row: int, token_ids: list[int], media: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Append one text prompt chunk to a row and feed the MTP head; the logits [V] after its last token."""
        return self.prefill_batch([row], [token_ids], None if media is None else [media])[0]

    @torch.inference_mode()
    def prefill_batch(self, rows: list[int], chunks: list[list[int]],
                      media: list[dict[str, torch.Tensor] | None] | None = None) -> torch.Tensor:
        """Append a text chunk to each row as one packed batch and feed the MTP head; logits [len(rows), V]."""
        if media is not None and any(inputs is not None for inputs in media):
            raise ValueError("speculative decoding serves text prompts only; serve images and videos with "
                             "speculative_tokens 0")
        batch = self._prepare_prefill(rows, chunks, None)
        hidden = self.forward.prefill_hidden(batch)
        self.main_forwards += 1
        for row, chunk, (start, end, _) in zip(rows, chunks, batch.bounds):
            self._feed_mtp([row], [list(chunk)], hidden[None, start:end])
        return self.model.compute_logits(hidden.index_select(0, batch.last_index))

    @torch.inference_mode()
    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """Feed each row its last token without speculating (and the MTP head its hidden state); logits [B, V]."""
        size = self._prepare_decode(rows, token_ids)
        if self.graphs is not None and (graph_size := self.graphs.padded_size(size)) is not None:
            hidden = self.graphs.replay(graph_size)[:size]
        else:
            hidden = self._run_decode(self.inputs[:, :size])
        self.main_forwards += 1
        self._feed_mtp(rows, [[t] for t in token_ids], hidden[:, None])
        return self.model.compute_logits(hidden)

    # The step itself is SpeculativeRunner's; only _verify (below) differs.
    speculate = torch.inference_mode()(SpeculativeRunner.speculate)

    # -- verify and commit ------------------------------------------------------------------------

    def _verify(self, rows: list[int], tokens: torch.Tensor):
        """Logits [B, T, V] and hidden [B, T, H] of a packed verify, and the commit of the accepted prefix."""
        verify = self._prepare_verify(rows, tokens)
        hidden = self.forward.prefill_hidden(verify).view(len(rows), verify.num_tokens, -1)
        return self.model.compute_logits(hidden), hidden, lambda accepted: self._commit(rows, verify, accepted)

    def _prepare_verify(self, rows: list[int], tokens: torch.Tensor) -> VerifyBatch:
        """A packed batch of tokens [B, T] after each row's cached tokens, its pages grown for all T."""
        for row in rows:
            if self.row_slot[row] is None:
                raise ValueError(f"row {row} holds no sequence: prefill it first")
        length = tokens.shape[1]
        # Host bookkeeping needs only the lengths; the token ids stay on the device.
        batch = self._prepare_prefill(rows, [[0] * length] * len(rows), None)
        return VerifyBatch(**{**vars(batch), "token_ids": tokens.reshape(-1)}, num_tokens=length)

    def _commit(self, rows: list[int], batch: VerifyBatch, accepted: torch.Tensor) -> None:
        """Keep the first accepted[b] (1..T) verified tokens of each row: GDN slots, then lengths and pages."""
        accepted = accepted.to(device=self.device, dtype=torch.long)
        slots = batch.state_slots.long()
        # After a tokens the conv state is window[..., a : a + K-1]: the last K-1 inputs seen. Every
        # GDN layer has the same conv shape, so one index serves them all.
        width = self.model.config.text.linear_conv_kernel_dim - 1
        index = (accepted[:, None] + torch.arange(width, device=self.device))[:, None, :]
        for layer, deferred in batch.linear.items():
            window = deferred.window
            conv = window.gather(2, index.expand(-1, window.shape[1], -1))
            self.state.conv[layer].index_copy_(0, slots, conv.to(self.state.conv[layer].dtype))
            self.kernels.gdr_commit(deferred.query, deferred.key, deferred.value, deferred.a, deferred.b,
                                    deferred.A_log, deferred.dt_bias, self.state.recurrent[layer],
                                    batch.state_slots, accepted)
        for row, (_, _, cached), count in zip(rows, batch.bounds, accepted.tolist()):
            self.blocks.truncate(row, cached + count)

    def _run_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states [B, H] (not logits) for staged decode inputs [5, B]; graph-safe."""
        return self.forward.decode_hidden(self._decode_batch(inputs))
