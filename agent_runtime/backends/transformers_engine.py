"""The transformers backend: CPU default and test engine.

One worker thread owns the model. Concurrent requests each get a KV slot (:mod:`slot_cache`); a
new request is prefilled on its own row, then every active row advances by one batched decode
forward per step, so trajectories waiting on tools never hold up the others and those generating
share the matrix multiplies. A finished request leaves its slot's cache parked: the next request
whose prompt extends it (the same trajectory after a tool call) feeds only the new tokens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import torch

from agent_runtime.backends.base import BackendInfo, FinishReason, GenerationChunk, PromptTooLongError, SamplingParams
from agent_runtime.backends.finish import eos_ids_of
from agent_runtime.backends.slot_cache import SlotCache
from agent_runtime.detok import IncrementalDetokenizer
from agent_runtime.models.forward_args import cache_keyword

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    ids: list[int] = field(default_factory=list)  # tokens whose keys/values the slot holds, in order
    busy: bool = False
    last_used: float = 0.0
    weights_version: int = 0  # the weights its keys/values were computed with


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    cancelled: bool = False
    slot: _Slot | None = None
    pending: int | None = None  # sampled, delivered, not yet fed to the cache
    generated: int = 0
    text: str = ""

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


GREEDY_BELOW = 1e-5  # temperatures under this sample greedily, as vLLM does (logits / T would overflow)


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[int, float]:
    """One token from a row of logits, and its logprob ``log_softmax(logits / T)`` before top-p."""
    logits = logits.float()
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


class TransformersBackend:
    """Serve a Hugging Face causal LM with slot-batched decoding on a worker thread."""

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
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        model_ctx = getattr(model.config, "max_position_embeddings", None) or 4096
        self.context_length = min(context_length or model_ctx, model_ctx)
        self.reuse_kv = reuse_kv
        self.batch_window_s = batch_window_s
        self._cache_argument = cache_keyword(model.forward)
        self.eos_ids = eos_ids_of(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        self.info = BackendInfo(
            name="transformers",
            model=name or getattr(model.config, "_name_or_path", "") or "model",
            context_length=self.context_length,
            extra={"max_slots": max_slots, "reuse_kv": reuse_kv},
        )
        self._cache = SlotCache(model.config, max_slots, self.context_length, next(model.parameters()).dtype, self.device)
        self._slots = [_Slot(i) for i in range(max_slots)]
        self._inbox: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._weights_version = 0
        self.stats = {"prefill_tokens": 0, "reused_tokens": 0, "decode_steps": 0, "decode_rows": 0}
        self._thread = threading.Thread(target=self._run, name="transformers-engine", daemon=True)
        self._thread.start()

    def weights_changed(self) -> None:
        """The model's weights were updated (a training step): cached keys/values are no longer reused."""
        self._weights_version += 1

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: torch.dtype = torch.float32, **kwargs: Any) -> "TransformersBackend":
        """A model directory or hub id, or a LoRA adapter directory (merged onto its base on load)."""
        from agent_runtime.models.resolve import load_causal_lm

        model, tokenizer = load_causal_lm(path, dtype=dtype, attn_implementation="sdpa")
        return cls(model, tokenizer, name=kwargs.pop("name", str(path)), **kwargs)

    # ---- async side -------------------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise RuntimeError("backend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        if len(prompt_ids) >= self.context_length:
            raise PromptTooLongError(len(prompt_ids), self.context_length)
        generator = None
        if params.temperature >= GREEDY_BELOW:
            generator = torch.Generator(device="cpu")
            seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
            generator.manual_seed(seed % 2**63)  # loops add turn and sample offsets to a seed
        req = _Request(
            prompt_ids=list(prompt_ids),
            params=params,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            detok=IncrementalDetokenizer(self.tokenizer),
            generator=generator,
        )
        self._inbox.put(req)
        self._wake.set()
        try:
            while True:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Closing the stream early (a stop found by the caller, a cancelled task) frees the slot.
            req.cancelled = True
            self._wake.set()

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, 5)

    # ---- worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        waiting: deque[_Request] = deque()
        active: list[_Request] = []
        while not self._closed:
            if not active and not waiting:
                self._wake.wait()
                self._wake.clear()
                if self.batch_window_s:
                    time.sleep(self.batch_window_s)  # let requests that arrive together start together
            while True:
                try:
                    waiting.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            with torch.inference_mode():
                waiting = deque(r for r in waiting if not r.cancelled)
                active = [r for r in active if not self._retire_if_cancelled(r)]
                while waiting and self._free_slot_available():
                    req = waiting.popleft()
                    try:
                        self._prefill(req)
                    except Exception as exc:  # this request fails; the engine and the others go on
                        self._fail([req], exc)
                    if req.slot is not None:
                        active.append(req)
                if active:
                    try:
                        self._decode_step(active)
                    except Exception as exc:
                        self._fail(active, exc)
                    active = [r for r in active if r.slot is not None]

    def _fail(self, requests: list[_Request], exc: Exception) -> None:
        log.exception("generation step failed")
        for req in requests:
            req.deliver(exc)
            self._release(req)

    def _retire_if_cancelled(self, req: _Request) -> bool:
        if req.cancelled:
            self._release(req)
            return True
        return False

    def _free_slot_available(self) -> bool:
        return any(not s.busy for s in self._slots)

    def _claim_slot(self, prompt: list[int]) -> tuple[_Slot, int]:
        """A free slot and how many leading prompt tokens it already holds."""
        free = [s for s in self._slots if not s.busy]
        for slot in free:
            if slot.weights_version != self._weights_version:
                slot.ids.clear()
                slot.weights_version = self._weights_version
        best, best_common = None, -1
        if self.reuse_kv:
            for slot in free:
                common = _common_prefix(slot.ids, prompt)
                if common > best_common or (common == best_common and slot.last_used < best.last_used):
                    best, best_common = slot, common
        if best is None or best_common <= 0:
            best = min(free, key=lambda s: s.last_used)  # least recently used
            best_common = _common_prefix(best.ids, prompt) if self.reuse_kv else 0
        # At least one token must be fed to get the logits of the next one.
        reused = min(best_common, len(prompt) - 1)
        best.busy = True
        del best.ids[reused:]
        return best, reused

    def _release(self, req: _Request) -> None:
        if req.slot is not None:
            req.slot.busy = False
            req.slot.last_used = time.monotonic()
            if not self.reuse_kv:
                req.slot.ids.clear()
            req.slot = None

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

    def _prefill(self, req: _Request) -> None:
        slot, reused = self._claim_slot(req.prompt_ids)
        req.slot = slot
        new = req.prompt_ids[reused:]
        self.stats["prefill_tokens"] += len(new)
        self.stats["reused_tokens"] += reused
        if len(new) == 1:
            req.pending = new[0]  # one token to feed: it joins the next batched decode step
            return
        logits = self._forward([slot.index], [reused], torch.tensor([new], device=self.device))
        slot.ids.extend(new)
        self._emit(req, logits[0])

    def _decode_step(self, active: list[_Request]) -> None:
        active.sort(key=lambda r: r.slot.index)  # contiguous slots attend through a view, not a copy
        slots = [r.slot.index for r in active]
        positions = [len(r.slot.ids) for r in active]
        input_ids = torch.tensor([[r.pending] for r in active], device=self.device)
        logits = self._forward(slots, positions, input_ids)
        self.stats["decode_steps"] += 1
        self.stats["decode_rows"] += len(active)
        for i, req in enumerate(active):
            req.slot.ids.append(req.pending)
            req.pending = None
            self._emit(req, logits[i])

    def _emit(self, req: _Request, logits: torch.Tensor) -> None:
        """Sample the next token of ``req``, deliver it, and finish the request if it is done."""
        token, logprob = sample_token(logits, req.params, req.generator)
        req.generated += 1
        delta = req.detok.add([token])
        req.text += delta
        finish: FinishReason | None = None
        stop_str = None
        if token in self.eos_ids:
            finish = "eos"
        else:
            stop_str = _find_stop(req.text, delta, req.params.stop)
            if stop_str is not None:
                finish = "stop"
            elif req.generated >= req.params.max_tokens or len(req.slot.ids) + 1 >= self.context_length:
                finish = "length"
        if finish is not None:
            delta += req.detok.flush()
        chunk = GenerationChunk(
            token_ids=[token],
            text=delta,
            logprobs=[logprob] if req.params.logprobs else None,
            finish_reason=finish,
            stop_str=stop_str,
        )
        req.deliver(chunk)
        if finish is None:
            req.pending = token
        else:
            self._release(req)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _find_stop(text: str, delta: str, stops: tuple[str, ...]) -> str | None:
    """The stop string completed by the latest ``delta``, if any (only the tail is searched)."""
    if not delta:
        return None
    for stop in stops:
        if stop in text[-(len(stop) + len(delta)) :]:
            return stop
    return None


