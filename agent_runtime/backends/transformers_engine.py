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
from agent_runtime.backends.slot_cache import SlotCache
from agent_runtime.backends.slot_engine import GREEDY_BELOW, Row, SlotEngine
from agent_runtime.models.forward_args import cache_keyword

__all__ = ["TransformersBackend", "sample_token_torch"]


def sample_token_torch(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[int, float]:
    """One token from a row of logits, and its logprob ``log_softmax(logits / T)`` before top-p."""
    logits = logits.float()
    if params.allowed_token_ids is not None:
        allowed = torch.tensor(sorted(params.allowed_token_ids), dtype=torch.long)
        logits = torch.full_like(logits, float("-inf")).index_copy(0, allowed, logits[allowed])
    if params.temperature < GREEDY_BELOW:
        logprobs = torch.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        return token, float(logprobs[token])
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logprobs.exp()
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= params.top_p
        drop[0] = False  # a top_p that rounds to 0 in float32 must still keep the best token
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        token = int(order[choice])
    else:
        token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(logprobs[token])


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
        self._start()

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: torch.dtype = torch.float32, **kwargs: Any) -> "TransformersBackend":
        """A model directory or hub id, or a LoRA adapter directory (merged onto its base on load)."""
        from agent_runtime.models.resolve import load_causal_lm

        model, tokenizer = load_causal_lm(path, dtype=dtype, attn_implementation="sdpa")
        return cls(model, tokenizer, name=kwargs.pop("name", str(path)), **kwargs)

    # ---- the engine's share of the slot scheduler (worker thread) ---------------------------

    def _worker_setup(self) -> None:
        torch.set_grad_enabled(False)

    def _new_rng(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        return generator

    def _sample(self, logits: torch.Tensor, params: SamplingParams, rng: torch.Generator | None) -> tuple[int, float]:
        with torch.inference_mode():  # the logits are inference tensors; so are the sampler's temporaries
            return sample_token_torch(logits, params, rng)

    def _forward_rows(self, rows: list[Row]) -> torch.Tensor:
        """Rows of one token go in one batched forward; a longer row (a prompt) goes alone."""
        with torch.inference_mode():
            if all(len(row.tokens) == 1 for row in rows):
                return self._forward([r.slot for r in rows], [r.start for r in rows],
                                     torch.tensor([r.tokens for r in rows], device=self.device))
            return torch.cat([self._forward([r.slot], [r.start], torch.tensor([r.tokens], device=self.device))
                              for r in rows])

    def _forward(self, slots: list[int], positions: list[int], input_ids: torch.Tensor) -> torch.Tensor:
        mask = self._cache.set_plan(slots, positions, input_ids.shape[1], self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,  # 4D: every architecture's mask builder passes it through as is
            position_ids=torch.tensor(positions, device=self.device).view(-1, 1)
            + torch.arange(input_ids.shape[1], device=self.device).view(1, -1),
            **{self._cache_argument: self._cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :]
