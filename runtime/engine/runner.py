"""The model side of every engine step: the one runner, on the CPU (torch reference kernels) and on a
GPU (Triton kernels, CUDA-graph decode).

`ModelRunner.run(batch)` takes the scheduler's plan and returns the sampled tokens: prompt
chunks of every sequence in one packed prefill, then one batched decode (or, with an MTP head,
one speculative step: runtime/engine/speculative.py), then sampling. The scheduler owns the
books (slots, pages, progress); the runner mirrors each admitted sequence's block table to the
device, zeroes the state slot of each sequence that starts, and runs the model.

Device tables (row `num_slots` is the padding row, every entry the scratch page):
  block_tables [num_slots + 1, max_pages] int32: page of each slot's j-th block
Decode inputs are staged in one pinned host buffer [4, batch] (token, cache position, table row,
rotary position = cache position + rope delta) and copied in one transfer; CUDA graphs read it.
"""
from __future__ import annotations

import numpy as np
import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.cuda_graphs import DecodeGraphs, graph_batch_sizes
from qwen35.runtime.engine.kv_pool import pages_for
from qwen35.runtime.engine.multimodal import MediaInputs, PreparedMedia, prepare_media
from qwen35.runtime.engine.sampler import Sampler
from qwen35.runtime.engine.scheduler import PrefillChunk, ScheduledBatch, StepOutput
from qwen35.runtime.engine.sequence import Sequence
from qwen35.runtime.engine.state_pool import PADDING_SLOT
from qwen35.runtime.kernels import select_kernels
from qwen35.runtime.model.batch import Mode, decode_batch, packed_batch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.qwen35_model import Qwen35Model


class ModelRunner:
    """A loaded model with its cache, kernel set, device tables, sampler and (optionally) MTP drafter."""

    def __init__(self, model: Qwen35Model, config: EngineConfig, num_slots: int, num_pages: int):
        from qwen35.runtime.engine.speculative import MtpDrafter  # it drives this runner's model and cache

        text = model.config.text
        self.model = model
        self.config = config
        self.num_slots = num_slots
        self.num_pages = num_pages
        self.page_size = config.page_size
        self.vocab_size = text.vocab_size
        self.device = model.output_weight.device
        self.kernels = select_kernels(self.device, config.kernels)
        drafts = config.speculative_tokens
        if drafts and model.mtp is None:
            raise ValueError("speculative decoding needs the checkpoint's MTP head (mtp.* tensors, "
                             "mtp_num_hidden_layers > 0); this model has none")
        # State slots: one per running sequence, then the prefix cache's checkpoints (scheduler.py numbers them so).
        self.cache = ModelCache(text, num_slots + config.num_checkpoints, num_pages, self.page_size,
                                model.output_weight.dtype, self.device,
                                mtp_layers=text.mtp_num_hidden_layers if drafts else 0)
        max_pages = pages_for(config.max_model_len + config.reserved_tokens_per_sequence, self.page_size)
        self.block_tables = torch.full((num_slots + 1, max_pages), self.cache.scratch_page, dtype=torch.int32,
                                       device=self.device)
        self.sampler = Sampler(num_slots, self.vocab_size, self.device, config.seed)
        self.drafter = MtpDrafter(self, drafts) if drafts else None
        # Speculation serves text only: its verify and drafts carry no M-RoPE positions.
        self.takes_media = model.visual is not None and self.drafter is None
        self.media_pad_ids = {"image": model.config.image_token_id, "video": model.config.video_token_id}
        on_cuda = self.device.type == "cuda"
        self.padding_column = np.array([0, 0, num_slots, 0])[:, None]
        self.host_inputs = torch.empty(4, num_slots, dtype=torch.int64, pin_memory=on_cuda)
        self.host_view = self.host_inputs.numpy()
        self.host_view[:] = self.padding_column
        self.inputs = self.host_inputs.to(self.device)
        self.graphs = None
        # MoE routing syncs with the host, and speculation never decodes plainly: eager for both.
        if on_cuda and config.cuda_graphs and not text.is_moe and self.drafter is None:
            self.graphs = DecodeGraphs(self._decode_hidden, self.inputs, graph_batch_sizes(num_slots))
            with torch.inference_mode():
                self.graphs.capture()

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> StepOutput:
        """One step: prompt chunks (packed), then decode or speculation, then sampling."""
        self._start(batch)
        completing = [chunk.seq for chunk in batch.prefills if chunk.completes_prompt]
        hidden = [self._prefill(batch.prefills)] if batch.prefills else []
        self._take_checkpoints(batch.prefills)
        if self.drafter is not None and batch.decodes:
            token_ids, logprobs = self._sample(hidden, completing)
            step = self.drafter.speculate(batch.decodes)
            return StepOutput(token_ids + step.token_ids, logprobs + step.logprobs, step.num_drafted,
                              step.num_accepted)
        if batch.decodes:
            hidden.append(self._decode(batch.decodes))
        return StepOutput(*self._sample(hidden, batch.sampled))

    def prepare_media(self, prompt_ids: list[int], media: MediaInputs) -> PreparedMedia:
        """Vision embeddings and M-RoPE positions of a whole prompt, computed once per request."""
        return prepare_media(self.model, prompt_ids, media)

    def block_table_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """The device block tables of the given slots [n] (int32), in order."""
        return self.block_tables.index_select(0, slots)

    # -- per step --------------------------------------------------------------------------------

    def _start(self, batch: ScheduledBatch) -> None:
        """Mirror admitted tables to the device; admitted sequences start from zero state or a prefix checkpoint."""
        if not batch.admitted:
            return
        for seq in batch.admitted:
            self.block_tables[seq.slot, :len(seq.block_table)] = torch.tensor(seq.block_table, dtype=torch.int32)
            self.sampler.start(seq)
            seq.rope_delta = 0
            if self.drafter is not None:
                self.drafter.start(seq)
        fresh = [seq.slot for seq in batch.admitted if seq.restore_slot is None]
        if fresh:
            self.cache.clear_slots(torch.tensor(fresh, dtype=torch.long, device=self.device))
        restored = [seq for seq in batch.admitted if seq.restore_slot is not None]
        if restored:
            self.cache.copy_slots(self._slot_tensor([seq.restore_slot for seq in restored]),
                                  self._slot_tensor([seq.slot for seq in restored]))

    def _take_checkpoints(self, chunks: list[PrefillChunk]) -> None:
        """Copy the state after each chunk that ends at its prompt's checkpoint boundary into the checkpoint slot."""
        taking = [chunk for chunk in chunks if chunk.checkpoint_slot is not None]
        if taking:
            self.cache.copy_slots(self._slot_tensor([chunk.seq.slot for chunk in taking]),
                                  self._slot_tensor([chunk.checkpoint_slot for chunk in taking]))

    def _slot_tensor(self, slots: list[int]) -> torch.Tensor:
        return torch.tensor(slots, dtype=torch.long, device=self.device)

    def _sample(self, hidden: list[torch.Tensor], seqs: list[Sequence]):
        """Token lists and logprob lists of seqs from their final hidden states ([] when there are none)."""
        if not seqs:
            return [], []
        return self.sampler.sample(self.model.compute_logits(torch.cat(hidden)), seqs)

    def _prefill(self, chunks: list[PrefillChunk]) -> torch.Tensor:
        """Every chunk in one packed forward; the hidden states [m, H] after the chunks that complete a prompt."""
        tokens, lengths, cached, slots, media = [], [], [], [], []
        for chunk in chunks:
            tokens += chunk.seq.prompt_ids[chunk.start:chunk.end]
            lengths.append(chunk.end - chunk.start)
            cached.append(chunk.start)
            slots.append(chunk.seq.slot)
            media.append(self._chunk_media(chunk))
        device = self.device
        token_ids = torch.tensor(tokens, dtype=torch.long, device=device)
        state_slots = torch.tensor(slots, dtype=torch.int32, device=device)
        positions = self._media_positions(lengths, cached, media)
        batch = packed_batch(Mode.PREFILL, token_ids, lengths, cached, state_slots, self.block_table_rows(state_slots),
                             self.page_size, positions)
        if positions is not None:
            batch.embed_index, batch.embeds = self.model.place_media(
                token_ids, *(self._cat([m.get(name) for m in media if m]) for name in ("image_embeds", "video_embeds")))
        ends = np.cumsum(lengths) - 1
        last = torch.tensor([end for end, chunk in zip(ends, chunks) if chunk.completes_prompt], dtype=torch.long,
                            device=device)
        if self.drafter is None:
            return self.model.language_model(batch, self.cache, self.kernels, rows=last)
        hidden = self.model.language_model(batch, self.cache, self.kernels)
        self.drafter.feed_prefill(chunks, hidden)
        return hidden.index_select(0, last)

    def _chunk_media(self, chunk: PrefillChunk) -> dict[str, torch.Tensor] | None:
        """The chunk's slice of its prompt's vision embeddings and positions (None for text)."""
        seq = chunk.seq
        if seq.media is None:
            return None
        prepared = seq.media.prepare(self, seq.prompt_ids)
        seq.rope_delta = prepared.rope_delta
        if chunk.completes_prompt:
            seq.media = None  # this choice is done with the pixels and embeddings
        return prepared.chunk(chunk.start, chunk.end)

    def _media_positions(self, lengths: list[int], cached: list[int],
                         media: list[dict[str, torch.Tensor] | None]) -> torch.Tensor | None:
        """M-RoPE positions [3, N] of the pack when a chunk brings media (text chunks rotate at their cache position)."""
        if all(m is None for m in media):
            return None
        pieces = []
        for length, start, inputs in zip(lengths, cached, media):
            if inputs is None:
                pieces.append(torch.arange(start, start + length, device=self.device).expand(3, -1))
            else:
                pieces.append(inputs["positions"][:, 0].to(self.device))
        return torch.cat(pieces, dim=1)

    @staticmethod
    def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        present = [t for t in tensors if t is not None]
        return torch.cat(present) if present else None

    def _decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Each sequence's last token in one batch; final hidden states [B, H] (a graph's output until the next replay)."""
        size = len(seqs)
        host = self.host_view
        for column, seq in enumerate(seqs):
            position = seq.num_tokens - 1
            host[0, column], host[1, column], host[2, column] = seq.last_token, position, seq.slot
            host[3, column] = position + seq.rope_delta
        graph_size = self.graphs.padded_size(size) if self.graphs is not None else None
        if graph_size is not None:
            host[:, size:graph_size] = self.padding_column
        # The whole buffer (a few KiB, one contiguous copy), non-blocking from pinned memory: the next
        # step rewrites it only after this step's tokens were read back (sampling syncs), by when the
        # copy has long finished.
        self.inputs.copy_(self.host_inputs, non_blocking=True)
        if graph_size is not None:
            return self.graphs.replay(graph_size)[:size]
        return self._decode_hidden(self.inputs[:, :size])

    def _decode_hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, H] for staged decode inputs [4, B]; everything derived on the device (graph-safe)."""
        rows = inputs[2]
        slots = torch.where(rows < self.num_slots, rows, PADDING_SLOT).to(torch.int32)
        batch = decode_batch(inputs[0], inputs[1], inputs[3], slots, self.block_tables.index_select(0, rows),
                             self.page_size)
        return self.model.language_model(batch, self.cache, self.kernels)


def build_runner(model: Qwen35Model, config: EngineConfig) -> tuple[ModelRunner, dict]:
    """A runner whose pools are sized like the planner's bundled plan; returns it with the sizing report.

    The budget for KV + state is config.memory_budget_bytes when set. Otherwise, on CUDA it is
    measured after a warm-up prefill of one step's prompt tokens; elsewhere nothing is measured
    and the pools hold exactly max_running_requests sequences of full context in whole pages. With
    speculation the MTP head's KV is one more layer of every page, and a measured budget first
    gives up the verify's peak above the warm-up's: logits [rows, k + 1, V] with the fp32 copies the
    acceptance and logprobs make (about three of them), which the warm-up does not run. Prefix-cache
    checkpoints are state slots beyond the running ones: a measured or given budget gives up their
    bytes first; on the CPU they come on top of the exact pools. The report shows them apart.
    """
    from qwen35.runtime.engine.memory_sizing import budget_for, measure_budget, plan_pools, planner_budget, \
        sizing_report

    config.validate()
    text = model.config.text
    device, dtype = model.output_weight.device, model.output_weight.dtype
    rows, page = config.max_running_requests, config.page_size
    capacity = config.max_model_len + config.reserved_tokens_per_sequence
    mtp_layers = text.mtp_num_hidden_layers if config.speculative_tokens else 0
    verify_bytes = 3 * rows * (config.speculative_tokens + 1) * text.vocab_size * 4 if config.speculative_tokens else 0
    budget, measured = config.memory_budget_bytes, None
    if budget is None and device.type != "cuda":
        per_seq = pages_for(capacity, page) * page
        budget = budget_for(text, rows, rows * per_seq, per_seq, dtype, mtp_layers)
    if budget is None:
        kernels = select_kernels(device, config.kernels)
        prompt = torch.zeros(1, config.prefill_tokens_per_step, dtype=torch.long, device=device)

        def warm_up() -> None:
            with torch.inference_mode():
                model.compute_logits(model.prompt_hidden(prompt, kernels=kernels)[:, -1])

        measured = measure_budget(device, warm_up)
        budget = measured.budget_bytes - verify_bytes
    plan = plan_pools(text, budget, rows, capacity, page, dtype, mtp_layers)
    checkpoints = config.num_checkpoints
    if checkpoints and (measured is not None or config.memory_budget_bytes is not None):
        plan = plan_pools(text, budget - checkpoints * plan.state_bytes_per_slot, rows, capacity, page, dtype,
                          mtp_layers)
    if plan.state_slots < 1 or plan.num_pages < pages_for(capacity, page):
        raise ValueError(f"{budget / 2**30:.2f} GiB for KV and state cannot hold one {config.max_model_len}-token "
                         "request: lower the context or free device memory")
    runner = ModelRunner(model, config, plan.state_slots, plan.num_pages)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    planner = planner_budget(measured.total_bytes, weights) if measured is not None else None
    state_bytes = runner.cache.state_nbytes
    checkpoint_bytes = state_bytes * checkpoints // (plan.state_slots + checkpoints)
    report = sizing_report(plan, state_bytes - checkpoint_bytes, runner.cache.kv_nbytes, measured, planner)
    report["prefix_checkpoints"] = checkpoints
    report["checkpoint_bytes"] = checkpoint_bytes
    if verify_bytes:
        report["speculation_bytes"] = verify_bytes
    return runner, report
