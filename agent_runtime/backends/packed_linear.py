"""oneDNN-packed weights for a CPU model's linear layers, used by the engine's inference forwards.

``F.linear`` in float32 calls MKL's sgemm, which for the few rows of a decode step runs at a fraction
of the CPU's speed (about 30 GFLOP/s at 8 rows on 2 AVX2 cores). oneDNN's linear on a weight reordered
once into its blocked layout takes about half the time from 2 to 8 rows and a third less at 32 (the
same sums in another order: results differ from MKL's in the last bits, as between two batch sizes).

The packed copy is only a cache. It is used inside ``torch.inference_mode`` (the engine's forwards)
and rebuilt when the weight changes: an optimizer step or ``load_state_dict`` bumps the tensor's
version counter, a new tensor is another object. Training forwards and backwards (outside inference
mode) run the layer's own ``forward``, so a model shared with a trainer trains exactly as before.
It costs a second copy of the packed weights' memory, held as long as the model. Layers already
given their own ``forward`` (by another engine on the same model) are left as they are.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import torch
from torch import nn

__all__ = ["PackedLinears", "packing_available"]

MIN_WEIGHT_ELEMENTS = 1 << 16  # LoRA's low-rank factors and other small layers keep F.linear
# One row keeps F.linear: through the engine, packed weights decoded 10 tokens/s at batch 1 against
# 14 (and 1.2x, 1.6x, 1.5x, 1.25x as many at 2, 4, 8, 32 streams).
MIN_ROWS = 2
BATCH_HINT = 32  # the rows oneDNN tunes its layout for: products of 2 to 100 rows all gained with 32 here


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinears:
    """Route the inference forwards of ``model``'s float32 CPU linear layers through packed weights."""

    def __init__(self, model: nn.Module) -> None:
        self._packed: dict[nn.Linear, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.layers = [
            m for m in model.modules()
            if type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
            and m.weight.numel() >= MIN_WEIGHT_ELEMENTS and "forward" not in vars(m)
        ]
        forward = self._forward_of()
        for layer in self.layers:
            layer.forward = types.MethodType(forward, layer)

    def _forward_of(self) -> Any:
        packed_weight = self._packed_weight

        def forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            if not torch.is_inference_mode_enabled() or x.numel() < MIN_ROWS * x.shape[-1]:
                return nn.functional.linear(x, layer.weight, layer.bias)
            return torch.ops.mkldnn._linear_pointwise(x, packed_weight(layer), layer.bias, "none", [], "")

        return forward

    def _packed_weight(self, layer: nn.Linear) -> torch.Tensor:
        weight = layer.weight
        entry = self._packed.get(layer)
        if entry is None or entry[0] is not weight or entry[1] != weight._version:
            with self._lock:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)
                entry = (weight, weight._version, packed)
                self._packed[layer] = entry
        return entry[2]
