"""The model's caches on the device: KV pages of the full-attention layers and state slots of the
Gated DeltaNet layers.

KV (every full-attention layer, the MTP head's layers included, indexed by layer id):
  key/value  [num_pages + 1, page_size, kv_heads, head_dim]  model dtype
Token t of a sequence lives in page block_table[t // page_size] at offset t % page_size; its flat
slot in the [(num_pages + 1) * page_size, kv_heads, head_dim] view is page * page_size + offset.
The extra last page is scratch: padding entries of a CUDA-graph batch write their K/V there and
read it back, so no real page is ever touched by a batch entry that holds no sequence.

State (every GDN layer), one slot per running sequence, then the prefix cache's checkpoints:
  conv       [num_slots, conv_dim, kernel - 1]            model dtype (last inputs, oldest first)
  recurrent  [num_slots, v_heads, k_head_dim, v_head_dim] fp32 (S in o = S^T q)
the layouts the causal_conv1d and gated_delta_rule kernels read through a slot id. Which pages
and slots a sequence holds is the scheduler's bookkeeping (engine/), not this storage's.
"""
from __future__ import annotations

import torch

from qwen35.planner.models.config import TextConfig


class ModelCache:
    """Preallocated KV pages and GDN state slots of one text model (and its MTP head)."""

    def __init__(self, text: TextConfig, num_slots: int, num_pages: int, page_size: int,
                 dtype: torch.dtype, device: torch.device | str, mtp_layers: int = 0):
        if num_slots < 1 or num_pages < 1 or page_size < 1:
            raise ValueError(f"a cache needs positive sizes, got {num_slots} slots and {num_pages} pages "
                             f"of {page_size} tokens")
        self.num_slots, self.num_pages, self.page_size = num_slots, num_pages, page_size
        kv_shape = (num_pages + 1, page_size, text.num_key_value_heads, text.head_dim)
        kv_layers = list(text.full_attention_layer_ids) + [text.num_hidden_layers + i for i in range(mtp_layers)]
        self.key = {i: torch.zeros(kv_shape, dtype=dtype, device=device) for i in kv_layers}
        self.value = {i: torch.zeros(kv_shape, dtype=dtype, device=device) for i in kv_layers}
        key_dim = text.linear_num_key_heads * text.linear_key_head_dim
        conv_dim = 2 * key_dim + text.linear_num_value_heads * text.linear_value_head_dim
        conv_shape = (num_slots, conv_dim, text.linear_conv_kernel_dim - 1)
        state_shape = (num_slots, text.linear_num_value_heads, text.linear_key_head_dim, text.linear_value_head_dim)
        self.conv = {i: torch.zeros(conv_shape, dtype=dtype, device=device) for i in text.linear_attention_layer_ids}
        self.recurrent = {i: torch.zeros(state_shape, dtype=torch.float32, device=device)
                          for i in text.linear_attention_layer_ids}

    @property
    def scratch_page(self) -> int:
        """The page padding entries use (one past the real pages)."""
        return self.num_pages

    @property
    def kv_nbytes(self) -> int:
        """Bytes the KV pages take (scratch page included)."""
        return sum(t.numel() * t.element_size() for store in (self.key, self.value) for t in store.values())

    @property
    def state_nbytes(self) -> int:
        """Bytes the state slots take."""
        return sum(t.numel() * t.element_size() for store in (self.conv, self.recurrent) for t in store.values())

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A full-attention layer's key and value pages."""
        return self.key[layer], self.value[layer]

    def state(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A GDN layer's conv and recurrent slot pools."""
        return self.conv[layer], self.recurrent[layer]

    def copy_slots(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        """Copy the state of slots `sources` into slots `targets` in every GDN layer (a checkpoint taken or restored)."""
        for store in (self.conv, self.recurrent):
            for tensor in store.values():
                tensor.index_copy_(0, targets, tensor.index_select(0, sources))

    def clear_slots(self, slots: torch.Tensor) -> None:
        """Zero the state of the given slots in every GDN layer (a new sequence starts from zero state)."""
        for store in (self.conv, self.recurrent):
            for tensor in store.values():
                tensor.index_fill_(0, slots, 0)
