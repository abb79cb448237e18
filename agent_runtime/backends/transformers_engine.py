"""The transformers backend: CPU default and test engine.

Scheduling (slots, batched decode steps, stops) is :mod:`slot_engine`'s. Here: one preallocated KV
slot per trajectory (:mod:`slot_cache`), written in place at that row's own position, the forward pass
that feeds a prompt into one row or advances every active row by one token, and sampling with torch
(a seed gives the same tokens it gave before the scheduler was shared with the llama.cpp engine).
"""

from __future__ import annotations

from typing import Any

import torch

from agent_runtime.backends.base import SamplingParams
from agent_runtime.backends.finish import eos_ids_of
from agent_runtime.backends.packed_linear import forget_packed, pack_linears, packing_available
from agent_runtime.backends.slot_cache import SlotCache
from agent_runtime.backends.slot_engine import GREEDY_BELOW, Row, SlotEngine
from agent_runtime.models.forward_args import cache_keyword

__all__ = ["TransformersBackend", "prefill_groups", "sample_rows_torch", "sample_token_torch"]

PREFILL_COLUMNS = 4096  # padded prompt tokens in one forward: bounds its activations (about 25 MiB a layer at 135M)
PAD_ID = 0  # any id: padding columns' outputs are discarded


def sample_token_torch(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[int, float]:
    """One token from a row of logits, and its logprob ``log_softmax(logits / T)`` before top-p."""
    return sample_rows_torch(logits.view(1, -1), [params], [generator])[0]


def sample_rows_torch(logits: torch.Tensor, params: list[SamplingParams],
                      generators: list[torch.Generator | None]) -> list[tuple[int, float]]:
    """A token from each row of ``logits`` ``(B, vocab)`` with that row's parameters and generator, and
    its logprob ``log_softmax(logits / T)`` before top-p; the softmax of all rows is one operation.

    A draw inverts the cumulative distribution at one uniform number from the row's generator:
    ``torch.multinomial`` over a 50k vocabulary costs about 1.4 ms a token on these CPUs, this 0.07.
    """
    logits = logits.float()
    restricted = [i for i, p in enumerate(params) if p.allowed_token_ids is not None]
    if restricted:
        logits = logits.clone()
        for i in restricted:
            allowed = torch.tensor(sorted(params[i].allowed_token_ids), dtype=torch.long)
            logits[i] = torch.full_like(logits[i], float("-inf")).index_copy(0, allowed, logits[i, allowed])
    # Each pass over a (32, 50k) matrix costs 1-2 ms here: the passes a step does not need are skipped.
    greedy = [p.temperature < GREEDY_BELOW for p in params]
    temperatures = [1.0 if g else p.temperature for g, p in zip(greedy, params)]
    if any(t != 1.0 for t in temperatures):
        logits = logits / torch.tensor(temperatures).view(-1, 1)
    logprobs = torch.log_softmax(logits, dim=-1)
    tokens = [0] * len(params)
    chosen = [i for i, g in enumerate(greedy) if g]
    if chosen:
        for i, token in zip(chosen, (logits if len(chosen) == len(params) else logits[chosen]).argmax(dim=-1).tolist()):
            tokens[i] = token
    plain = [i for i, p in enumerate(params) if not greedy[i] and p.top_p >= 1.0]
    if plain:
        # float32 sums: a float64 cumsum over (32, 50k) costs 10 ms here, and a token of probability 0
        # still spans no interval of the cumulative sum, so it is never drawn.
        cdf = torch.cumsum((logprobs if len(plain) == len(params) else logprobs[plain]).exp(), dim=-1)
        draws = torch.cat([torch.rand(1, generator=generators[i]) for i in plain])
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1]).view(-1, 1), right=True).view(-1)
        for i, token in zip(plain, picked.clamp(max=logits.shape[-1] - 1).tolist()):
            tokens[i] = token
    for i, p in enumerate(params):
        if not greedy[i] and p.top_p < 1.0:
            tokens[i] = _draw_in_nucleus(logprobs[i].exp(), p.top_p, generators[i])
    picked_logprobs = logprobs.gather(1, torch.tensor(tokens).view(-1, 1)).view(-1).tolist()
    return list(zip(tokens, picked_logprobs))


def _draw_in_nucleus(probs: torch.Tensor, top_p: float, generator: torch.Generator | None) -> int:
    """A token among the smallest set of most likely ones whose mass reaches ``top_p``. Only tokens
    above a cutoff are sorted (sorting all 50k costs 4 ms): if those above it already hold ``top_p``
    of the mass, the nucleus lies among them, since it takes the most likely tokens first."""
    for cutoff in (1e-4, 1e-7, 0.0):
        candidates = torch.nonzero(probs >= cutoff).view(-1) if cutoff else torch.arange(len(probs))
        if cutoff == 0.0 or float(probs[candidates].sum()) >= top_p:
            break
    ranked, order = torch.sort(probs[candidates], descending=True)
    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
    kept = ranked[: max(int(torch.count_nonzero(torch.cumsum(ranked, dim=-1) - ranked < top_p)), 1)]
    cdf = torch.cumsum(kept, dim=-1)
    draw = torch.rand(1, generator=generator) * cdf[-1]
    return int(candidates[order[min(int(torch.searchsorted(cdf, draw, right=True)), len(kept) - 1)]])


class TransformersBackend(SlotEngine):
    """Serve a Hugging Face causal LM with slot-batched decoding on a worker thread."""

    engine_name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_slots: int = 32,
        context_length: int | None = None,
        batch_window_s: float = 0.002,
        reuse_kv: bool = True,
        name: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self._cache_argument = cache_keyword(model.forward)
        model_ctx = getattr(model.config, "max_position_embeddings", None) or 4096
        super().__init__(
            tokenizer,
            eos_ids=eos_ids_of(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None)),
            context_length=min(context_length or model_ctx, model_ctx),
            max_slots=max_slots,
            batch_window_s=batch_window_s,
            reuse_kv=reuse_kv,
            name=name or getattr(model.config, "_name_or_path", "") or "model",
        )
        self._cache = SlotCache(model.config, max_slots, self.context_length, next(model.parameters()).dtype, self.device)
        if self.device.type == "cpu" and packing_available():
            pack_linears(model)  # the decode steps' matrix products, about 2x faster at 8 rows
        self._start()

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: torch.dtype = torch.float32, **kwargs: Any) -> "TransformersBackend":
        """A model directory or hub id, or a LoRA adapter directory (merged onto its base on load)."""
        from agent_runtime.models.resolve import load_causal_lm

        model, tokenizer = load_causal_lm(path, dtype=dtype, attn_implementation="sdpa")
        return cls(model, tokenizer, name=kwargs.pop("name", str(path)), **kwargs)

    # ---- the engine's share of the slot scheduler (worker thread) ---------------------------

    def weights_changed(self) -> None:
        super().weights_changed()
        forget_packed(self.model)  # an update through .data bumps no version counter

    def _worker_setup(self) -> None:
        torch.set_grad_enabled(False)

    def _new_rng(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        return generator

    def _sample_rows(self, logits: torch.Tensor, params: list[SamplingParams],
                     rngs: list[torch.Generator | None]) -> list[tuple[int, float]]:
        with torch.inference_mode():  # the logits are inference tensors; so are the sampler's temporaries
            return sample_rows_torch(logits, params, rngs)

    def _forward_rows(self, rows: list[Row]) -> torch.Tensor:
        """Rows of one token go in one batched forward; prompts go in groups of similar length."""
        with torch.inference_mode():
            if all(len(row.tokens) == 1 for row in rows):
                return self._forward(rows)
            logits: list[torch.Tensor | None] = [None] * len(rows)
            for group in prefill_groups([len(row.tokens) for row in rows], PREFILL_COLUMNS):
                for i, row_logits in zip(group, self._forward([rows[i] for i in group])):
                    logits[i] = row_logits
            return torch.stack(logits)

    def _forward(self, rows: list[Row]) -> torch.Tensor:
        """One forward over ``rows``, each left-padded to the longest; the logits after each row's last token."""
        order = sorted(range(len(rows)), key=lambda i: rows[i].slot)  # contiguous slots attend through a view
        rows = [rows[i] for i in order]
        width = max(len(row.tokens) for row in rows)
        input_ids = torch.tensor([[PAD_ID] * (width - len(row.tokens)) + row.tokens for row in rows], device=self.device)
        mask, position_ids = self._cache.set_plan(
            [row.slot for row in rows], [row.start for row in rows], [len(row.tokens) for row in rows], self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,  # 4D or None: every architecture's mask builder passes a 4D one through as is
            position_ids=position_ids,
            **{self._cache_argument: self._cache},
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        return logits if order == sorted(order) else logits[torch.tensor(order).argsort()]


def prefill_groups(lengths: list[int], max_columns: int) -> list[list[int]]:
    """Indices of prompts to feed together: by length, a group grows while its padded size stays
    within ``max_columns`` tokens and at most twice its real tokens (padding is computed, not free)."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        padded = (len(group) + 1) * lengths[i]  # sorted: this prompt is the group's longest
        if group and (padded > max_columns or padded > 2 * (real + lengths[i])):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += lengths[i]
    if group:
        groups.append(group)
    return groups
