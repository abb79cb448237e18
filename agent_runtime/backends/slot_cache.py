"""A KV cache of fixed slots, one per trajectory, each row written at its own position.

Hugging Face's ``StaticCache`` writes every row of a batch at one offset, and ``DynamicCache``
grows all rows together, so neither can batch trajectories of different lengths without
re-prefilling. Here each slot is a preallocated row; a forward pass names the slots it runs on
and where each writes, and the caller passes the matching 4D mask itself.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class _Plan:
    """What the next forward pass writes: which slots, from which position, and how far to attend."""

    def __init__(self) -> None:
        self.slots = torch.zeros(0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.contiguous_from: int | None = None  # slots are range(n, n + B): attend through a view
        self.kv_len = 0


class SlotLayer(CacheLayerMixin):
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, plan: _Plan) -> None:
        super().__init__()
        self.keys, self.values, self.plan = keys, values, plan
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # preallocated

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        plan = self.plan
        q_len = key_states.shape[2]
        if q_len == 1:
            self.keys[plan.slots, :, plan.positions] = key_states[:, :, 0]
            self.values[plan.slots, :, plan.positions] = value_states[:, :, 0]
        else:  # prefill runs one row at a time
            slot, pos = int(plan.slots[0]), int(plan.positions[0])
            self.keys[slot, :, pos : pos + q_len] = key_states[0]
            self.values[slot, :, pos : pos + q_len] = value_states[0]
        if plan.contiguous_from is not None:
            rows = slice(plan.contiguous_from, plan.contiguous_from + key_states.shape[0])
            return self.keys[rows, :, : plan.kv_len], self.values[rows, :, : plan.kv_len]
        return self.keys[plan.slots, :, : plan.kv_len], self.values[plan.slots, :, : plan.kv_len]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.plan.kv_len, 0

    def get_seq_length(self) -> int:
        return self.plan.kv_len

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    """``num_slots`` rows of ``max_len`` positions for every attention layer.

    ``torch.empty`` reserves address space only: memory is committed as positions are written.
    """

    def __init__(self, config, num_slots: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_kv = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        self.plan = _Plan()
        shape = (num_slots, n_kv, max_len, head_dim)
        layers = [
            SlotLayer(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device), self.plan)
            for _ in range(text_config.num_hidden_layers)
        ]
        super().__init__(layers=layers)
        self.num_slots, self.max_len = num_slots, max_len
        # Masked positions still enter ``weights @ values``: 0 * NaN is NaN, so every position a
        # forward can read must hold a finite number. Zero each slot lazily, up to this mark.
        self._zeroed = [0] * num_slots

    def set_plan(self, slots: list[int], positions: list[int], q_len: int, device: torch.device) -> torch.Tensor:
        """Prepare the next forward; returns its boolean attention mask ``(B, 1, q_len, kv_len)``."""
        plan = self.plan
        plan.slots = torch.tensor(slots, dtype=torch.long, device=device)
        plan.positions = torch.tensor(positions, dtype=torch.long, device=device)
        plan.kv_len = max(positions) + q_len
        self._zero_until(slots, plan.kv_len)
        first = slots[0]
        plan.contiguous_from = first if slots == list(range(first, first + len(slots))) else None
        # Row b, query i sits at positions[b] + i and sees every position up to and including itself.
        kv = torch.arange(plan.kv_len, device=device).view(1, 1, 1, -1)
        q = (plan.positions.view(-1, 1, 1, 1) + torch.arange(q_len, device=device).view(1, 1, -1, 1))
        return kv <= q

    def _zero_until(self, slots: list[int], kv_len: int) -> None:
        for slot in slots:
            start = self._zeroed[slot]
            if start < kv_len:
                end = min(self.max_len, max(kv_len, start + 256))
                for layer in self.layers:
                    layer.keys[slot, :, start:end] = 0
                    layer.values[slot, :, start:end] = 0
                self._zeroed[slot] = end
