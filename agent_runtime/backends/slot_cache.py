"""A KV cache of fixed slots, one per trajectory, each row written at its own position.

Hugging Face's ``StaticCache`` writes every row of a batch at one offset, and ``DynamicCache``
grows all rows together, so neither can batch trajectories of different lengths without
re-prefilling. Here each slot is a preallocated row; a forward pass names the slots it runs on
and where each writes, and the caller passes the matching 4D mask itself.

Several prompts go through one forward left-padded to a common width, so that every row's last
token sits in the last column (the only logits computed). Padding columns write their keys and values
to a trash position past the end of every slot, which no forward reads, and attend to position 0 only.
"""

from __future__ import annotations

import mmap

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class _Plan:
    """What the next forward pass writes: which slots, where each column goes, and how far to attend."""

    def __init__(self) -> None:
        self.slots = torch.zeros(0, dtype=torch.long)
        self.slot_of_column = torch.zeros(0, 1, dtype=torch.long)  # (B, width): the row's slot
        self.write_at = torch.zeros(0, 1, dtype=torch.long)  # (B, width): the position each column writes
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
        # Advanced indices around a slice put their dimensions first: (B, width, heads, head_dim).
        self.keys[plan.slot_of_column, :, plan.write_at] = key_states.transpose(1, 2)
        self.values[plan.slot_of_column, :, plan.write_at] = value_states.transpose(1, 2)
        if plan.contiguous_from is not None:
            rows = slice(plan.contiguous_from, plan.contiguous_from + key_states.shape[0])
            return self.keys[rows, :, : plan.kv_len], self.values[rows, :, : plan.kv_len]
        return self.keys[plan.slots, :, : plan.kv_len], self.values[plan.slots, :, : plan.kv_len]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.plan.kv_len, 0

    def get_seq_length(self) -> int:
        return self.plan.kv_len

    def get_max_length(self) -> int:
        return self.keys.shape[2] - 1  # the last position is the padding's trash


class SlotCache(Cache):
    """``num_slots`` rows of ``max_len`` positions for every attention layer.

    Memory is committed as positions are written (see :func:`_zeros`).
    """

    def __init__(self, config, num_slots: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_kv = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        self.plan = _Plan()
        shape = (num_slots, n_kv, max_len + 1, head_dim)  # position max_len: where padding writes
        layers = [
            SlotLayer(_zeros(shape, dtype, device), _zeros(shape, dtype, device), self.plan)
            for _ in range(text_config.num_hidden_layers)
        ]
        super().__init__(layers=layers)
        self.num_slots, self.max_len = num_slots, max_len

    def set_plan(self, slots: list[int], starts: list[int], lengths: list[int],
                 device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Prepare the next forward: row ``b`` writes ``lengths[b]`` tokens into slot ``slots[b]`` from
        position ``starts[b]``, right-aligned in ``max(lengths)`` columns. Returns the boolean attention
        mask ``(B, 1, width, kv_len)`` and the position ids ``(B, width)``. One row from position 0 is
        plain causal attention: no mask then, so that SDPA's causal kernel skips the upper triangle and
        attends the grouped key/value heads as they are (a mask costs both)."""
        plan = self.plan
        width = max(lengths)
        starts_t = torch.tensor(starts, dtype=torch.long, device=device).view(-1, 1)
        pads = width - torch.tensor(lengths, dtype=torch.long, device=device).view(-1, 1)
        column = torch.arange(width, device=device).view(1, -1)
        positions = starts_t + column - pads
        real = column >= pads
        plan.slots = torch.tensor(slots, dtype=torch.long, device=device)
        plan.slot_of_column = plan.slots.view(-1, 1).expand(-1, width)
        plan.write_at = torch.where(real, positions, self.max_len)
        plan.kv_len = max(s + n for s, n in zip(starts, lengths))
        first = slots[0]
        plan.contiguous_from = first if slots == list(range(first, first + len(slots))) else None
        # A real column sees every position up to and including its own; a padding column sees
        # position 0 only (finite, so its row stays finite, and what it computes goes to the trash).
        position_ids = torch.where(real, positions, 0)
        if len(slots) == 1 and starts[0] == 0:
            return None, position_ids
        kv = torch.arange(plan.kv_len, device=device).view(1, 1, 1, -1)
        return kv <= position_ids.view(len(slots), 1, width, 1), position_ids


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros that cost nothing until written. Masked positions still enter ``weights @ values`` and
    0 * NaN is NaN, so every position a forward can read must hold a finite number. On the CPU, a
    private anonymous mapping: the kernel zero-fills its 4 KiB pages as they are first written (numpy's
    and torch's allocators ask for 2 MiB pages, each zero-filled whole at its first write)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(pages, dtype=torch.uint8).view(dtype).view(shape)
