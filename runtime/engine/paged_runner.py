"""A `ModelRunner` over a paged KV pool and a fixed pool of linear-attention state slots.

Each engine row owns, while it holds a sequence, one state slot (conv + recurrent state of
every Gated DeltaNet layer) and the KV pages its tokens fill, page by page. Prompt chunks of
several rows run as one packed varlen batch (cu_seqlens); decode runs one token for every row
in one batch, reading KV through block tables and state through slot ids, replayed from a CUDA
graph at the next captured batch size when there is one. Triton kernels on CUDA, the torch
references on CPU, chosen once at construction.

Images and videos: a prompt chunk may carry its slice of the prompt's PreparedMedia; its vision
embeddings replace the pad tokens' and its M-RoPE positions rotate it. The row then keeps a rope
delta (host int, multimodal.py): every later token of it rotates at cache position + delta.

Device-side tables, kept in step with the host bookkeeping (row `num_rows` is the padding row):
  block_tables [num_rows + 1, max_pages] int32: page of each row's j-th block (scratch if unused)
  row_state_slot [num_rows + 1] int32: each row's state slot, -1 when it holds none
"""
from __future__ import annotations

import numpy as np
import torch

from qwen35.runtime.engine.cuda_graphs import DecodeGraphs, graph_batch_sizes
from qwen35.runtime.engine.kv_pool import BlockManager, KVPool, pages_for
from qwen35.runtime.engine.memory_sizing import budget_for, measure_budget, plan_pools, planner_budget, sizing_report
from qwen35.runtime.engine.multimodal import MediaInputs, PreparedMedia, prepare_media
from qwen35.runtime.engine.paged_kernels import select_kernels
from qwen35.runtime.engine.paged_model import DecodeBatch, PagedTextModel, PrefillBatch
from qwen35.runtime.engine.state_pool import PADDING_SLOT, SlotAllocator, StatePool
from qwen35.runtime.model.qwen35_model import Qwen35Model


class PagedModelRunner:
    """`ModelRunner` (reset_row / prefill / decode) plus packed prefill_batch and release_row."""

    def __init__(self, model: Qwen35Model, num_rows: int, max_len: int, *, page_size: int = 16,
                 num_pages: int | None = None, kernels: str = "auto", cuda_graphs: bool = True,
                 max_graph_batch: int | None = None):
        text = model.config.text
        self.model = model
        self.num_rows = num_rows
        self.max_len = max_len
        self.vocab_size = text.vocab_size
        self.device = model.output_weight.device
        dtype = model.output_weight.dtype
        num_pages = num_rows * pages_for(max_len, page_size) if num_pages is None else num_pages
        self.blocks = BlockManager(num_pages, page_size, num_rows, max_len)
        self.slots = SlotAllocator(num_rows)
        self.kv = KVPool(text.full_attention_layer_ids, num_pages, page_size, text.num_key_value_heads,
                         text.head_dim, dtype, self.device)
        self.state = StatePool(text, num_rows, dtype, self.device)
        self.kernels = select_kernels(self.device, kernels)
        self.forward = PagedTextModel(model, self.kv, self.state, self.kernels)
        self.row_slot: list[int | None] = [None] * num_rows
        self.rope_deltas = [0] * num_rows  # rotary position - cache position of each row's next token
        self.media_token_ids = {"image_embeds": model.config.image_token_id,
                                "video_embeds": model.config.video_token_id}
        self.block_tables = torch.full((num_rows + 1, self.blocks.max_pages_per_row), self.blocks.scratch_page,
                                       dtype=torch.int32, device=self.device)
        self.row_state_slot = torch.full((num_rows + 1,), PADDING_SLOT, dtype=torch.int32, device=self.device)
        # Decode inputs [5, batch]: token, cache position, row, flat KV slot, rotary position (cache
        # position + rope delta). Padding entries (columns past the batch) hold the padding row, whose
        # KV slot is the scratch page's first.
        self.padding_column = np.array([0, 0, num_rows, self.blocks.scratch_page * page_size, 0])[:, None]
        on_cuda = self.device.type == "cuda"
        self.host_inputs = torch.empty(5, num_rows, dtype=torch.int64, pin_memory=on_cuda)
        self.host_view = self.host_inputs.numpy()
        self.host_view[:] = self.padding_column
        self.inputs = self.host_inputs.to(self.device)
        self.graphs = None
        if on_cuda and cuda_graphs and not text.is_moe:  # MoE routing syncs with the host: eager only
            sizes = graph_batch_sizes(min(num_rows, max_graph_batch or num_rows))
            self.graphs = DecodeGraphs(self._run_decode, self.inputs, sizes)
            with torch.inference_mode():
                self.graphs.capture()

    # -- the ModelRunner protocol ---------------------------------------------------------------

    def reset_row(self, row: int) -> None:
        """Start a new sequence in row: its old pages and slot go back, a zeroed slot comes in."""
        self.release_row(row)
        slot = self.slots.allocate()
        self.state.clear(slot)
        self.row_slot[row] = slot
        self.row_state_slot[row] = slot

    def release_row(self, row: int) -> None:
        """Free the row's pages and state slot (call when its sequence ends)."""
        self.blocks.free(row)
        self.rope_deltas[row] = 0
        if self.row_slot[row] is not None:
            self.slots.free(self.row_slot[row])
            self.row_slot[row] = None
            self.row_state_slot[row] = PADDING_SLOT

    def prepare_media(self, prompt_ids: list[int], media: MediaInputs) -> PreparedMedia:
        """Vision embeddings and M-RoPE positions of a whole prompt, computed once per request."""
        return prepare_media(self.model, prompt_ids, media)

    def prefill(self, row: int, token_ids: list[int], media: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Append one prompt chunk (media: its PreparedMedia.chunk) to a row; the logits [V] after its last token."""
        return self.prefill_batch([row], [token_ids], None if media is None else [media])[0]

    @torch.inference_mode()
    def prefill_batch(self, rows: list[int], chunks: list[list[int]],
                      media: list[dict[str, torch.Tensor] | None] | None = None) -> torch.Tensor:
        """Append a chunk to each of several rows as one packed batch; logits [len(rows), V].

        media: None, or per row None or the chunk's PreparedMedia.chunk(start, end).
        """
        batch = self._prepare_prefill(rows, chunks, media)
        return self.forward.prefill(batch)

    @torch.inference_mode()
    def decode(self, rows: list[int], token_ids: list[int]) -> torch.Tensor:
        """Feed each row its last token in one batch; logits [len(rows), V], valid until the next decode."""
        size = self._prepare_decode(rows, token_ids)
        if self.graphs is not None and (graph_size := self.graphs.padded_size(size)) is not None:
            return self.graphs.replay(graph_size)[:size]
        return self._run_decode(self.inputs[:, :size])

    # -- prepare inputs ---------------------------------------------------------------------------

    def _prepare_prefill(self, rows: list[int], chunks: list[list[int]],
                         media: list[dict[str, torch.Tensor] | None] | None) -> PrefillBatch:
        if len(set(rows)) != len(rows) or len(rows) != len(chunks) or (media is not None and len(media) != len(rows)):
            raise ValueError("prefill_batch takes one chunk (and one media entry, if any) per distinct row")
        tokens, positions, kv_slots, bounds, new_pages = [], [], [], [], []
        for row, chunk in zip(rows, chunks):
            if not chunk:
                raise ValueError(f"row {row}: an empty prompt chunk")
            if self.row_slot[row] is None:
                self.reset_row(row)
            cached = self.blocks.lengths[row]
            new_pages += [(row, index, page) for index, page in self.blocks.grow(row, len(chunk))]
            tokens += chunk
            start = cached + self.rope_deltas[row]  # text rotates at the same position on all three axes
            positions += range(start, start + len(chunk))
            kv_slots += self.blocks.slots(row, cached, cached + len(chunk))
            bounds.append((len(tokens) - len(chunk), len(tokens), cached))
        self._write_block_tables(new_pages)
        device = self.device
        rows_t = torch.tensor(rows, dtype=torch.long, device=device)
        cu = [0] + [end for _, end, _ in bounds]
        positions = torch.tensor(positions, dtype=torch.long, device=device)
        embed_index = embeds = None
        if media is not None and any(inputs is not None for inputs in media):
            positions, embed_index, embeds = self._place_media(rows, chunks, media, bounds, positions)
        return PrefillBatch(
            token_ids=torch.tensor(tokens, dtype=torch.long, device=device),
            positions=positions,
            cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=device),
            state_slots=self.row_state_slot.index_select(0, rows_t),
            kv_slots=torch.tensor(kv_slots, dtype=torch.long, device=device),
            block_tables=self.block_tables.index_select(0, rows_t),
            last_index=torch.tensor(cu[1:], dtype=torch.long, device=device) - 1,
            cached_lens=torch.tensor([cached for _, _, cached in bounds], dtype=torch.int32, device=device),
            bounds=bounds,
            embed_index=embed_index,
            embeds=embeds,
        )

    def _place_media(self, rows: list[int], chunks: list[list[int]], media: list[dict[str, torch.Tensor] | None],
                     bounds: list[tuple[int, int, int]], positions: torch.Tensor):
        """M-RoPE positions [3, T], vision embeddings [M, H] and their pack offsets [M]; records the rows' deltas."""
        positions = positions.expand(3, -1).clone()
        offsets, embeds = [], []
        for row, chunk, inputs, (start, end, cached) in zip(rows, chunks, media, bounds):
            if inputs is None:
                continue
            given = inputs["positions"]
            if tuple(given.shape) != (3, 1, len(chunk)):
                raise ValueError(f"row {row}: media positions of shape {tuple(given.shape)} for a {len(chunk)}-token "
                                 "chunk; pass PreparedMedia.chunk(start, end) of this chunk")
            positions[:, start:end] = given[:, 0]
            for name, token_id in self.media_token_ids.items():
                pads = [start + i for i, token in enumerate(chunk) if token == token_id]
                kind_embeds = inputs.get(name)
                given_count = 0 if kind_embeds is None else kind_embeds.shape[0]
                if len(pads) != given_count:
                    raise ValueError(f"row {row}: the chunk has {len(pads)} pad tokens (id {token_id}) but "
                                     f"{given_count} {name}; pass PreparedMedia.chunk(start, end) of this chunk")
                if pads:
                    offsets += pads
                    embeds.append(kind_embeds)
            # As Qwen35Model._record_rope_deltas: the last token holds the largest position so far. One
            # small device read per media chunk; text chunks never sync.
            self.rope_deltas[row] = int(given[:, 0, -1].max()) + 1 - (cached + len(chunk))
        if not offsets:
            return positions, None, None
        return positions, torch.tensor(offsets, dtype=torch.long, device=self.device), torch.cat(embeds)

    def _prepare_decode(self, rows: list[int], token_ids: list[int]) -> int:
        """Reserve each row's next slot and stage the inputs; returns the batch size."""
        size = len(rows)
        if size > self.num_rows or len(token_ids) != size:
            raise ValueError(f"decode takes one token per row, at most {self.num_rows} rows")
        host = self.host_view
        new_pages = []
        for column, row in enumerate(rows):
            if self.row_slot[row] is None:
                raise ValueError(f"row {row} holds no sequence: prefill it first")
            position = self.blocks.lengths[row]
            new_pages += [(row, index, page) for index, page in self.blocks.grow(row, 1)]
            host[0, column], host[1, column], host[2, column] = token_ids[column], position, row
            host[3, column], host[4, column] = self.blocks.slot(row, position), position + self.rope_deltas[row]
        self._write_block_tables(new_pages)
        if self.graphs is not None:
            host[:, size:self.graphs.padded_size(size) or size] = self.padding_column
        # The whole buffer (a few KiB, one contiguous copy), non-blocking from pinned memory: the next
        # step rewrites it only after this step's logits were read back (sampling syncs), by when the
        # copy has long finished.
        self.inputs.copy_(self.host_inputs, non_blocking=True)
        return size

    def _write_block_tables(self, new_pages: list[tuple[int, int, int]]) -> None:
        """Mirror newly reserved pages into the device block tables (one small copy per call)."""
        if not new_pages:
            return
        rows, indices, pages = (torch.tensor(column, dtype=torch.long) for column in zip(*new_pages))
        self.block_tables[rows.to(self.device), indices.to(self.device)] = pages.to(self.device, torch.int32)

    # -- run the model ------------------------------------------------------------------------------

    def _run_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for staged decode inputs [5, B] (graph-safe)."""
        return self.forward.decode(self._decode_batch(inputs))

    def _decode_batch(self, inputs: torch.Tensor) -> DecodeBatch:
        """The DecodeBatch of staged inputs [5, B]; everything derived on the device (graph-safe)."""
        rows = inputs[2]
        return DecodeBatch(
            token_ids=inputs[0], positions=inputs[4],
            state_slots=self.row_state_slot.index_select(0, rows),
            kv_slots=inputs[3],
            block_tables=self.block_tables.index_select(0, rows),
            seq_lens=(inputs[1] + 1).to(torch.int32),
        )


def build_paged_runner(model: Qwen35Model, max_len: int, max_running: int, *, page_size: int = 16,
                       budget_bytes: float | None = None, prefill_chunk: int = 2048, kernels: str = "auto",
                       cuda_graphs: bool = True, speculative_tokens: int = 0) -> tuple[PagedModelRunner, dict]:
    """A runner whose pools are sized by planner.memory.slot_pools; returns it with the sizing report.

    The budget for KV + state is `budget_bytes` when given. Otherwise, on CUDA it is measured after
    a warm-up prefill of prefill_chunk tokens and a decode step; elsewhere nothing is measured and
    the pools hold exactly max_running rows of full context in whole pages (what the eager runner
    holds). With
    speculative_tokens k the runner is a PagedSpeculativeRunner: rows hold max_len + k + 1 tokens,
    and a measured budget first gives up what the MTP head's own per-row KV cache takes.
    """
    text = model.config.text
    device = model.output_weight.device
    dtype = model.output_weight.dtype
    capacity = max_len + (speculative_tokens + 1 if speculative_tokens else 0)
    # Outside the pools with speculation: the MTP head's per-row KV cache (DraftCache), and the
    # verify's peak above the warm-up's (logits [rows, k + 1, V] with the fp32 copies the
    # acceptance and logprobs make, about three of them), which the warm-up does not run.
    draft_bytes = 0
    if speculative_tokens:
        draft_bytes = max_running * capacity * 2 * text.mtp_num_hidden_layers * text.num_key_value_heads \
            * text.head_dim * dtype.itemsize
        draft_bytes += 3 * max_running * (speculative_tokens + 1) * text.vocab_size * 4
    measured = None
    if budget_bytes is None and device.type != "cuda":
        per_row = pages_for(capacity, page_size) * page_size
        budget_bytes = budget_for(text, max_running, max_running * per_row, per_row, dtype)
    if budget_bytes is None:
        def warm_up() -> None:
            scratch = PagedModelRunner(model, 1, prefill_chunk + 1, page_size=page_size, kernels=kernels,
                                       cuda_graphs=False)
            scratch.prefill(0, [0] * prefill_chunk)
            scratch.decode([0], [0])
            del scratch

        measured = measure_budget(device, warm_up)
        budget_bytes = measured.budget_bytes - draft_bytes
    plan = plan_pools(text, budget_bytes, max_running, capacity, page_size, dtype)
    if plan.state_slots < 1 or plan.num_pages < pages_for(capacity, page_size):
        raise ValueError(f"{budget_bytes / 2**30:.2f} GiB for KV and state cannot hold one {max_len}-token "
                         f"request: lower the context or free device memory")
    common = dict(page_size=page_size, num_pages=plan.num_pages, kernels=kernels, cuda_graphs=cuda_graphs)
    if speculative_tokens:
        from qwen35.runtime.engine.paged_speculative import PagedSpeculativeRunner  # it builds on this module

        runner = PagedSpeculativeRunner(model, plan.state_slots, max_len, speculative_tokens, **common)
    else:
        runner = PagedModelRunner(model, plan.state_slots, max_len, **common)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    planner = planner_budget(measured.total_bytes, weights) if measured is not None else None
    report = sizing_report(plan, runner.state.nbytes, runner.kv.nbytes, measured, planner)
    if speculative_tokens:
        report["speculation_bytes"] = draft_bytes
    return runner, report
