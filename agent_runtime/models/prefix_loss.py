"""Next-token loss of a batch whose rows share a long prefix (a system prompt), paying for it once.

Agent prompts start with the protocol's system prompt, often three times longer than the rest of
an example. Its keys and values are computed once per batch and repeated for each row; gradients
flow through them, so the loss and its gradients equal those of the full padded batch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from agent_runtime.models.forward_args import cache_keyword

__all__ = ["shared_prefix_length", "prefix_shared_loss"]


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading ids all ``sequences`` have in common."""
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for s in sequences[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def prefix_shared_loss(model: Any, rows: list[tuple[list[int], list[int]]], prefix_len: int, pad_id: int,
                       reduction: str = "mean") -> tuple[torch.Tensor, int]:
    """Loss of ``rows`` (``(input_ids, labels)``, labels -100 where nothing is learned), all starting
    with the same ``prefix_len`` ids, on which no label may fall. Returns ``(loss, labelled tokens)``;
    ``reduction="sum"`` gives the summed loss (for normalisers spanning several batches).

    Works for any Hugging Face causal LM, PEFT-wrapped or not.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    device = next(base.parameters()).device
    prefix = torch.tensor([rows[0][0][:prefix_len]], device=device)
    tails = [(ids[prefix_len:], labels[prefix_len:]) for ids, labels in rows]
    if any(lab != -100 for _, labels in rows for lab in labels[:prefix_len + 1]):
        raise ValueError("a label falls on the shared prefix")
    width = max(len(ids) for ids, _ in tails)
    # Right padding: with causal attention, pads only follow real tokens, so no mask is needed.
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in tails], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in tails], device=device)
    keyword = cache_keyword(decoder.forward)
    cache = DynamicCache(config=base.config)
    decoder(input_ids=prefix, use_cache=True, **{keyword: cache})  # fills the cache in place
    cache.batch_repeat_interleave(len(tails))
    hidden = decoder(input_ids=input_ids, **{keyword: cache}).last_hidden_state
    # The vocabulary projection only where a label is: most positions of an agent example are prompt.
    targets = labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep])
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction=reduction)
    return loss, int(keep.sum())
