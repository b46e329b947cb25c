"""MTP speculative decoding: the drafting part the runner composes, and the one speculative step.

One `speculate` step for the decoding sequences, each with L tokens cached and last token t_L:
  1. draft: the MTP head first catches up over the sequence's pending positions (those whose
     main hidden state it has not consumed yet; the last one pairs h_{L-1} with t_L), then
     chains k - 1 more single-token steps on its own output hidden state and draft token;
  2. verify: one main forward in VERIFY mode over [t_L, d_1 .. d_k] for every sequence (Gated
     DeltaNet state read, not written);
  3. accept: rejection_sampler.verify_drafts decides n accepted drafts and one more token;
     Rows that follow a grammar have every verified position masked first (the mask after the
     drafts before it), so a draft the grammar refuses has target probability 0 and is
     rejected, and the correction or bonus token is drawn from the masked target. The drafts
     themselves are drawn from the head's logits under the same grammar (the mask after the
     drafts so far), so q is the masked draft distribution and the grammar's forced tokens are
     drafted, not wasted.
  4. commit: the GDN layers keep the state of the n + 1 kept tokens (TextModel.commit); the
     KV written for rejected drafts is never read (the sequence's length excludes it). The
     head's chained entries are dropped (they came from draft hidden states, not main ones),
     and the verify's hidden states h_L .. h_{L+n} become the pending positions of the next step.

The head's KV lives in the page pool beside the main model's (same pages, its own layer), at
the head's own positions: entry i pairs h_i with token i+1, so it trails the main cache. Per
slot, `mtp_length` counts its entries; the P pending positions m .. L-1 (m = mtp_length) keep
their hidden states in pending_hidden[slot, :P] and the tokens after them, m+1 .. L-1, in
pending_ids[slot, :P-1]; t_L arrives with the step. Both are [slots, k+1, ...] device tensors,
so a catch-up is one gather. Prefill chunks feed the head too, so a sequence is always ready
to draft. Text only: the runner refuses media with speculation (no M-RoPE in drafts).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qwen35.runtime.engine.outputs import TokenLogprob
from qwen35.runtime.engine.rejection_sampler import DRAFT_SALT, add_counts, distribution, draw, verify_drafts
from qwen35.runtime.engine.sampler import token_logprobs
from qwen35.runtime.engine.scheduler import PrefillChunk
from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.model.batch import Mode, decode_batch, packed_batch


@dataclass
class SpeculativeStep:
    """One speculate call's outcome per sequence, in the order of its sequences."""

    token_ids: list[list[int]]  # accepted drafts, then the correction or bonus token (1 .. k+1 tokens)
    logprobs: list[list[TokenLogprob | None]]
    num_drafted: int  # drafts proposed in all
    num_accepted: int  # drafts accepted in all


class MtpDrafter:
    """The MTP head's per-slot positions over a runner's model and cache, and the speculative step."""

    def __init__(self, runner, num_speculative_tokens: int):
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.runner = runner
        self.model = runner.model
        self.num_speculative_tokens = num_speculative_tokens
        slots, width = runner.num_slots, num_speculative_tokens + 1
        weight = self.model.output_weight
        self.pending_hidden = torch.zeros(slots, width, self.model.config.text.hidden_size, dtype=weight.dtype,
                                          device=runner.device)
        self.pending_ids = torch.zeros(slots, width, dtype=torch.long, device=runner.device)
        self.pending_count = [0] * slots
        self.mtp_length = [0] * slots

    def start(self, seq: Sequence) -> None:
        """A sequence begins in its slot: the head has seen nothing of it past its cached prefix.

        A prefix from the prefix cache holds the head's entries too (same pages); the entry that
        pairs the prefix's last hidden state with the next token is the one its first owner wrote,
        and the head goes on from the first uncached position as from a prompt's first token.
        """
        self.pending_count[seq.slot] = 0
        self.mtp_length[seq.slot] = seq.num_cached_tokens

    def feed_prefill(self, chunks: list[PrefillChunk], hidden: torch.Tensor) -> None:
        """After a packed prefill (hidden [N, H] of every token): the head consumes each position whose next token is known.

        Before its prompt completes a sequence has at most one pending position (the last token of
        its previous chunk), so no pending token ids are read here.
        """
        slots, next_ids, states, counts = [], [], [], []
        offset = 0
        for chunk in chunks:
            slot, ids = chunk.seq.slot, chunk.seq.prompt_ids[chunk.start:chunk.end]
            own = hidden[offset:offset + len(ids)]
            offset += len(ids)
            if self.pending_count[slot]:  # h of the previous chunk's last token pairs with this chunk's first
                fed, fed_states = ids, torch.cat([self.pending_hidden[slot, :1], own[:-1]])
            else:  # a prompt's first token has no hidden state before it to pair with
                fed, fed_states = ids[1:], own[:-1]
            self.pending_hidden[slot, 0] = own[-1]
            self.pending_count[slot] = 1
            if fed:
                slots.append(slot)
                next_ids += fed
                states.append(fed_states)
                counts.append(len(fed))
        if slots:
            self._run_head(slots, torch.tensor(next_ids, dtype=torch.long, device=hidden.device), torch.cat(states),
                           counts)

    def speculate(self, seqs: list[Sequence]) -> SpeculativeStep:
        """Draft, verify and accept for each decoding sequence given its last token."""
        runner, model, k = self.runner, self.model, self.num_speculative_tokens
        sampler = runner.sampler
        batch, slots = sampler.batch_for(seqs)
        counts = prompt_mask = None
        if batch.needs_penalties:
            counts, prompt_mask = sampler.history.rows(slots)
        last = torch.tensor([seq.last_token for seq in seqs], dtype=torch.long, device=runner.device)
        drafts, draft_probs = self._draft(seqs, last, batch, counts, prompt_mask)
        grammars = [seq.grammar for seq in seqs]
        # Read before the verify is queued, so the copy waits for the drafts only.
        draft_ids = drafts.tolist() if any(grammar is not None for grammar in grammars) else None

        state_slots = slots.to(torch.int32)
        tokens = torch.cat([last[:, None], drafts], dim=1)  # [B, k + 1]
        verify = packed_batch(Mode.VERIFY, tokens.reshape(-1), [k + 1] * len(seqs), [seq.num_tokens - 1 for seq in seqs],
                              state_slots, runner.block_table_rows(state_slots), runner.page_size)
        hidden = model.language_model(verify, runner.cache, runner.kernels).view(len(seqs), k + 1, -1)
        logits = model.compute_logits(hidden)
        if draft_ids is not None and any(grammar is not None and grammar.mask_offset(row) is not None
                                         for grammar, row in zip(grammars, draft_ids)):
            sampler.bitmask.apply_with_drafts(logits, grammars, draft_ids)
        verdict = verify_drafts(logits, drafts, draft_probs, batch, counts, prompt_mask, sampler.generator)
        emitted = verdict.num_accepted + 1
        model.language_model.commit(verify, emitted, runner.cache, runner.kernels)

        self.pending_hidden.index_copy_(0, slots, hidden.to(self.pending_hidden.dtype))
        self.pending_ids[slots, :k] = drafts
        kept = torch.arange(k + 1, device=runner.device)[None, :] < emitted[:, None]
        sampler.history.append(slots[:, None].expand(-1, k + 1)[kept], verdict.tokens[kept])
        accepted = verdict.num_accepted.tolist()
        token_ids = [row[:count + 1] for row, count in zip(verdict.tokens.tolist(), accepted)]
        sampler.advance_grammars(seqs, token_ids)
        for seq, count in zip(seqs, accepted):
            self.pending_count[seq.slot] = count + 1
        chosen = top_ids = top_values = None
        if batch.max_logprobs is not None:
            raw = torch.log_softmax(logits.to(torch.float32), dim=-1)
            chosen = raw.gather(2, verdict.tokens[..., None]).squeeze(2)
            top_values, top_ids = raw.topk(batch.max_logprobs, dim=-1)
        return SpeculativeStep(token_ids, token_logprobs(seqs, token_ids, chosen, top_ids, top_values),
                               len(seqs) * k, sum(accepted))

    def _run_head(self, slots: list[int], next_ids: torch.Tensor, hidden: torch.Tensor,
                  counts: list[int]) -> torch.Tensor:
        """Append counts[i] entries (packed next-token ids [N], main hidden states [N, H]) to each slot's head cache.

        Returns the head's output at each sequence's last entry [n, H].
        """
        runner = self.runner
        state_slots = torch.tensor(slots, dtype=torch.int32, device=runner.device)
        batch = packed_batch(Mode.PREFILL, next_ids, counts, [self.mtp_length[s] for s in slots], state_slots,
                             runner.block_table_rows(state_slots), runner.page_size)
        last = torch.tensor(np.cumsum(counts) - 1, dtype=torch.long, device=runner.device)
        out = self.model.mtp(self.model.language_model.embed_tokens(next_ids), hidden, batch, runner.cache,
                             runner.kernels, rows=last)
        for slot, count in zip(slots, counts):
            self.mtp_length[slot] += count
        return out

    def _draft(self, seqs: list[Sequence], last: torch.Tensor, batch, counts: torch.Tensor | None,
               prompt_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """k draft tokens per sequence [B, k] and their draft distributions q [B, k, V] (None if all greedy)."""
        runner, model = self.runner, self.model
        slot_list = [seq.slot for seq in seqs]
        pending = [self.pending_count[slot] for slot in slot_list]
        width = max(pending)
        slots = torch.tensor(slot_list, dtype=torch.long, device=runner.device)
        count_t = torch.tensor(pending, dtype=torch.long, device=runner.device)
        next_ids = self.pending_ids[slots, :width].scatter(1, (count_t - 1)[:, None], last[:, None])
        held = torch.arange(width, device=runner.device)[None, :] < count_t[:, None]
        hidden = self._run_head(slot_list, next_ids[held], self.pending_hidden[slots, :width][held], pending)
        starts = torch.tensor([self.mtp_length[slot] for slot in slot_list], dtype=torch.long, device=runner.device)
        tables = runner.block_table_rows(slots)
        grammars = [seq.grammar for seq in seqs]
        # Under a grammar each draft is read back to mask the next one: one sync per draft, grammar steps only.
        drafted = [[] for _ in seqs] if any(grammar is not None for grammar in grammars) else None
        drafts, probs = [], []
        for j in range(self.num_speculative_tokens):
            logits = model.compute_logits(hidden)
            if drafted is not None:
                runner.sampler.bitmask.apply(logits, grammars, drafted)
            top, q = distribution(logits, batch, counts, prompt_mask)
            token = draw(batch, top, q, batch.steps + j, runner.sampler.generator, DRAFT_SALT)
            if drafted is not None:
                for row, draft in zip(drafted, token.tolist()):
                    row.append(draft)
            drafts.append(token)
            probs.append(q)
            counts = add_counts(counts, token)
            if j + 1 < self.num_speculative_tokens:
                # Chained entries sit past the head's length: the next step overwrites them.
                step = decode_batch(token, starts + j, starts + j, slots.to(torch.int32), tables, runner.page_size)
                hidden = model.mtp(model.language_model.embed_tokens(token), hidden, step, runner.cache,
                                   runner.kernels)
        return torch.stack(drafts, dim=1), (torch.stack(probs, dim=1) if probs[0] is not None else None)
