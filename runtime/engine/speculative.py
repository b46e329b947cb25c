"""MTP speculative decoding: the model runner that drafts k tokens with the MTP head and
verifies them in one main-model forward per step.

One `speculate` step for a batch of rows, each with main-cache length L and last token t_L:
  1. draft: the MTP head first catches up over the row's pending positions (those whose
     main hidden state it has not consumed yet; the last one pairs h_{L-1} with t_L), then
     chains k - 1 more single-token steps on its own output hidden state and draft token;
  2. verify: one main forward over [t_L, d_1 .. d_k] for all rows (verify.verify_forward);
  3. accept: rejection_sampler.verify_drafts decides n accepted drafts and one more token;
  4. commit: main KV lengths roll back to L + n + 1 and GDN state is rebuilt for those
     tokens (verify.commit_accepted); the MTP cache rolls back to L (its chained entries
     were built from draft hidden states, not main ones) and the verify's hidden states
     h_L .. h_{L+n} become the row's pending positions for the next step's catch-up.

MTP cache invariant: entry i pairs h_i with token i+1, so it trails the main cache; a row's
P pending positions m .. L-1 (m = its MTP length) keep their hidden states in
`pending_hidden[row, :P]` and the tokens after them, m+1 .. L-1, in `pending_ids[row, :P-1]`;
t_L arrives with the next call. Both buffers are [rows, k+1, ...] tensors, so a step's
catch-up is one gather, with no per-row Python work. Prefill chunks and plain decode steps
feed the MTP too, so a row is always ready to draft.

Caches hold max_len + k + 1 positions: a verify writes up to k positions past the tokens
that will be kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen35.runtime.engine.rejection_sampler import DRAFT_SALT, add_counts, distribution, draw, verify_drafts
from qwen35.runtime.engine.sampling import SamplingBatch, TokenHistory
from qwen35.runtime.model.qwen35_model import Qwen35Model
from qwen35.runtime.model.verify import commit_accepted, forward_hidden, verify_forward


@dataclass
class SpeculativeStep:
    """One speculate call's outcome per row, in the order of its rows."""

    token_ids: list[list[int]]  # accepted drafts, then the correction or bonus token (1 .. k+1 tokens)
    num_accepted: list[int]  # drafts accepted per row
    num_drafted: int  # drafts proposed in all
    logprobs: torch.Tensor | None = None  # [B, k+1] raw logprobs of the emitted tokens (when asked)
    top_ids: torch.Tensor | None = None  # [B, k+1, N]
    top_logprobs: torch.Tensor | None = None  # [B, k+1, N]


class SpeculativeRunner:
    """`ModelRunner` with MTP speculation: prefill and decode as usual, plus `speculate`."""

    def __init__(self, model: Qwen35Model, num_rows: int, max_len: int, num_speculative_tokens: int):
        if model.mtp is None:
            raise ValueError("speculative decoding needs the checkpoint's MTP head (mtp.* tensors, "
                             "mtp_num_hidden_layers > 0); this model has none")
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.model = model
        self.num_rows = num_rows
        self.max_len = max_len
        self.num_speculative_tokens = num_speculative_tokens
        self.vocab_size = model.config.text.vocab_size
        self.device = model.output_weight.device
        capacity = max_len + num_speculative_tokens + 1
        self.cache = model.new_cache(num_rows, capacity)
        self.draft_cache = model.mtp.new_cache(num_rows, capacity)
        weight = model.language_model.embed_tokens.weight
        self.pending_hidden = torch.zeros(num_rows, num_speculative_tokens + 1, model.config.text.hidden_size,
                                          dtype=weight.dtype, device=self.device)
        self.pending_ids = torch.zeros(num_rows, num_speculative_tokens + 1, dtype=torch.long, device=self.device)
        self.pending_count = [0] * num_rows
        self.main_forwards = 0  # prefill chunks, decodes and verifies: what speculation saves on

    def reset_row(self, row: int) -> None:
        """Empty a row of both caches and of its pending MTP positions."""
        self.cache.lengths[row] = 0
        for store in (self.cache.conv, self.cache.recurrent):
            for state in store.values():
                state[row].zero_()
        self.draft_cache.lengths[row] = 0
        self.pending_count[row] = 0

    def prefill(self, row: int, token_ids: list[int]) -> torch.Tensor:
        """Run one prompt chunk into its row and feed the MTP head; the last position's logits [V]."""
        tokens = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        hidden = self._main(tokens, [row])
        self._feed_mtp([row], [list(token_ids)], hidden)
        return self.model.compute_logits(hidden[0, -1])

    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """Feed each row its last token without speculating; logits [B, V]."""
        tokens = torch.tensor(token_ids, dtype=torch.long, device=self.device)[:, None]
        hidden = self._main(tokens, rows)
        self._feed_mtp(rows, [[t] for t in token_ids], hidden)
        return self.model.compute_logits(hidden[:, -1])

    def speculate(self, rows: list[int], token_ids: list[int], batch: SamplingBatch,
                  history: TokenHistory | None = None, slots: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> SpeculativeStep:
        """Draft, verify and accept for each row given its last token; batch holds the rows' sampling."""
        counts = prompt_mask = None
        if batch.needs_penalties:
            if history is None or slots is None:
                raise ValueError("penalties need a TokenHistory and the batch's slots")
            counts, prompt_mask = history.rows(slots)
        drafts, draft_probs = self._draft(rows, token_ids, batch, counts, prompt_mask, generator)
        last = torch.tensor(token_ids, dtype=torch.long, device=self.device)[:, None]
        logits, hidden, commit = self._verify(rows, torch.cat([last, drafts], dim=1))
        self.main_forwards += 1
        verdict = verify_drafts(logits, drafts, draft_probs, batch, counts, prompt_mask, generator)
        commit(verdict.num_accepted + 1)

        rows_t = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.pending_hidden.index_copy_(0, rows_t, hidden.to(self.pending_hidden.dtype))
        self.pending_ids[rows_t, :self.num_speculative_tokens] = drafts
        accepted = verdict.num_accepted.tolist()
        emitted = verdict.tokens.tolist()
        for row, count in zip(rows, accepted):
            self.pending_count[row] = count + 1
        step = SpeculativeStep([tokens[:count + 1] for tokens, count in zip(emitted, accepted)], accepted,
                               len(rows) * self.num_speculative_tokens)
        if batch.max_logprobs is not None:
            raw = torch.log_softmax(logits.to(torch.float32), dim=-1)
            step.logprobs = raw.gather(2, verdict.tokens[..., None]).squeeze(2)
            step.top_logprobs, step.top_ids = raw.topk(batch.max_logprobs, dim=-1)
        return step

    def _verify(self, rows: list[int], tokens: torch.Tensor):
        """Logits [B, T, V] and hidden states [B, T, H] of tokens [B, T] after the rows, and the
        function that keeps each row's first accepted[b] of them (the cache is untouched until then)."""
        verify = verify_forward(self.model, self.cache, rows, tokens)
        return verify.logits, verify.hidden, lambda accepted: commit_accepted(self.cache, verify, accepted)

    def _main(self, tokens: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """A committed main forward; the final-normed hidden states [B, T, H]."""
        self.main_forwards += 1
        return forward_hidden(self.model, self.cache, rows, tokens)

    def _feed_mtp(self, rows: list[int], token_ids: list[list[int]], hidden: torch.Tensor) -> None:
        """After a committed main forward: the MTP head consumes every position whose next token is known."""
        fed, next_ids, states = [], [], []
        for i, (row, tokens) in enumerate(zip(rows, token_ids)):
            pending = self.pending_count[row]
            # A row's first token has no hidden state before it to pair with.
            ids = self.pending_ids[row, :pending - 1].tolist() + tokens if pending else tokens[1:]
            if ids:
                fed.append(row)
                next_ids.append(torch.tensor(ids, dtype=torch.long, device=self.device))
                states.append(torch.cat([self.pending_hidden[row, :pending], hidden[i, :-1]]))
            self.pending_hidden[row, 0] = hidden[i, -1]
            self.pending_count[row] = 1
        if fed:
            pad = torch.nn.utils.rnn.pad_sequence
            self._run_mtp(fed, pad(next_ids, batch_first=True), pad(states, batch_first=True),
                          [len(ids) for ids in next_ids])

    def _run_mtp(self, rows: list[int], next_ids: torch.Tensor, hidden: torch.Tensor,
                 counts: list[int]) -> torch.Tensor:
        """Append counts[b] positions (next token ids [B, W], main hidden [B, W, H]) to draft-cache rows.

        Returns the head's output at each row's last real position [B, H]. Positions past a
        row's count are padding: they write KV past the row's length, which then excludes them.
        """
        step = self.draft_cache.begin(rows, next_ids.shape[1])
        embeds = self.model.language_model.embed_tokens(next_ids)
        out = self.model.mtp(embeds, hidden.to(embeds.dtype), cache=self.draft_cache, step=step)
        for row, count in zip(rows, counts):
            self.draft_cache.lengths[row] += count
        last = torch.tensor(counts, device=self.device) - 1
        return out[torch.arange(len(rows), device=self.device), last]

    def _draft(self, rows: list[int], token_ids: list[int], batch: SamplingBatch, counts: torch.Tensor | None,
               prompt_mask: torch.Tensor | None,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """k draft tokens per row [B, k] and their draft distributions q [B, k, V] (None if all greedy)."""
        pending = [self.pending_count[row] for row in rows]
        width = max(pending)
        rows_t = torch.tensor(rows, dtype=torch.long, device=self.device)
        last = torch.tensor(pending, dtype=torch.long, device=self.device)[:, None] - 1
        next_ids = self.pending_ids[rows_t, :width].scatter(
            1, last, torch.tensor(token_ids, dtype=torch.long, device=self.device)[:, None])
        hidden = self._run_mtp(rows, next_ids, self.pending_hidden[rows_t, :width], pending)
        starts = [self.draft_cache.lengths[row] for row in rows]
        drafts, probs = [], []
        for j in range(self.num_speculative_tokens):
            top, q = distribution(self.model.compute_logits(hidden), batch, counts, prompt_mask)
            token = draw(batch, top, q, batch.steps + j, generator, DRAFT_SALT)
            drafts.append(token)
            probs.append(q)
            counts = add_counts(counts, token)
            if j + 1 < self.num_speculative_tokens:
                step = self.draft_cache.begin(rows, 1)
                embeds = self.model.language_model.embed_tokens(token[:, None])
                hidden = self.model.mtp(embeds, hidden[:, None], cache=self.draft_cache, step=step)[:, 0]
                self.draft_cache.commit(step)
        for row, start in zip(rows, starts):
            self.draft_cache.lengths[row] = start  # chained entries came from draft hidden states
        return torch.stack(drafts, dim=1), (torch.stack(probs, dim=1) if probs[0] is not None else None)
