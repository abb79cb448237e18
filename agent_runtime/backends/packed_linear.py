"""oneDNN-packed weights for a CPU model's linear layers, used by the engine's inference forwards.

``F.linear`` in float32 calls MKL's sgemm, which for the few rows of a decode step runs at a fraction
of the CPU's speed (about 30 GFLOP/s at 8 rows on 2 AVX2 cores). oneDNN's linear on a weight reordered
once into its blocked layout takes about half the time from 2 to 8 rows and a third less at 32 (the
same sums in another order: results differ from MKL's in the last bits, as between two batch sizes).

The packed copy is only a cache. It is used inside ``torch.inference_mode`` (the engine's forwards)
and rebuilt when the weight changes: an optimizer step or ``load_state_dict`` bumps the tensor's
version counter, a new tensor is another object, and :func:`forget_packed` (the engine's
``weights_changed``) drops every copy, for writes through ``.data``, which no counter sees. Training
forwards and backwards (outside inference mode) run the plain product, so a model shared with a
trainer trains exactly as before. It costs a second copy of the packed weights' memory, held as long
as the layer. Layers that already have a ``forward`` of their own (packed by another engine on the
same model) are left as they are.
"""

from __future__ import annotations

import threading
import types
import weakref

import torch
from torch import nn

__all__ = ["forget_packed", "pack_linears", "packing_available"]

MIN_WEIGHT_ELEMENTS = 1 << 16  # LoRA's low-rank factors and other small layers keep F.linear
# One row keeps F.linear: through the engine, packed weights decoded 10 tokens/s at batch 1 against
# 14 (and 1.2x, 1.6x, 1.5x, 1.25x as many at 2, 4, 8, 32 streams).
MIN_ROWS = 2
BATCH_HINT = 32  # the rows oneDNN tunes its layout for: products of 2 to 100 rows all gained with 32 here

# layer -> (the weight it was packed from, that weight's version then, the packed weight)
_packed: weakref.WeakKeyDictionary[nn.Linear, tuple[torch.Tensor, int, torch.Tensor]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack_linears(model: nn.Module) -> None:
    """Route the inference forwards of ``model``'s float32 CPU linear layers through packed weights."""
    for layer in model.modules():
        if (type(layer) is nn.Linear and layer.weight.dtype == torch.float32
                and layer.weight.device.type == "cpu" and layer.weight.numel() >= MIN_WEIGHT_ELEMENTS
                and "forward" not in vars(layer)):
            # bound to the layer: a deepcopy of the model rebinds it to the copied layer
            layer.forward = types.MethodType(_forward, layer)


def forget_packed(model: nn.Module) -> None:
    """Drop the packed copies of ``model``'s layers: they are rebuilt from the weights on next use."""
    with _lock:
        for layer in model.modules():
            _packed.pop(layer, None)


def _forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_inference_mode_enabled() or x.numel() < MIN_ROWS * x.shape[-1]:
        return nn.functional.linear(x, layer.weight, layer.bias)
    return torch.ops.mkldnn._linear_pointwise(x, _packed_weight(layer), layer.bias, "none", [], "")


def _packed_weight(layer: nn.Linear) -> torch.Tensor:
    weight = layer.weight
    entry = _packed.get(layer)
    if entry is None or entry[0] is not weight or entry[1] != weight._version:
        entry = (weight, weight._version, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT))
        with _lock:
            _packed[layer] = entry
    return entry[2]
