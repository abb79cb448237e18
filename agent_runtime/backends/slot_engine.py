"""The scheduler every local engine shares: KV slots, batched decode steps, sampling, stop checks.

One worker thread owns the model. Concurrent requests each get a slot (a row of the KV cache, or a
sequence id); a new request feeds its prompt into its slot, then every active slot advances by one
batched decode forward per step, so trajectories waiting on tools never hold up the others and
those generating share the matrix multiplies. A finished request leaves its slot's cache parked:
the next request whose prompt extends it (the same trajectory after a tool call) feeds only the new
tokens. An engine supplies the forward pass (:meth:`SlotEngine._forward_rows`) and, where its cache
needs it, :meth:`SlotEngine._truncate_slot`; everything else lives here, once. Sampling defaults to
:func:`sample_token` on numpy logits, row by row; an engine may sample its own way, a step's rows at
once (:meth:`SlotEngine._sample_rows`).
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
from typing import AbstractSet, Any, AsyncIterator, Sequence

import numpy as np

from agent_runtime.backends.base import BackendInfo, FinishReason, GenerationChunk, PromptTooLongError, SamplingParams
from agent_runtime.detok import IncrementalDetokenizer

log = logging.getLogger(__name__)

GREEDY_BELOW = 1e-5  # temperatures under this sample greedily, as vLLM does (logits / T would overflow)


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None) -> tuple[int, float]:
    """One token from a row of float32 logits, and its logprob ``log_softmax(logits / T)`` before top-p.

    numpy, not torch: these vector ops run single-threaded on the worker thread, where torch would
    wake its intra-op thread pool at every token and take cores from an engine's own threads.
    """
    if params.allowed_token_ids is not None:
        allowed = np.fromiter(params.allowed_token_ids, dtype=np.int64)
        masked = np.full_like(logits, -np.inf)
        masked[allowed] = logits[allowed]
        logits = masked
    if params.temperature < GREEDY_BELOW:
        token = int(np.argmax(logits))
        shifted = logits - logits[token]
        return token, float(-np.log(np.exp(shifted).sum(dtype=np.float64)))
    scaled = logits / np.float32(params.temperature)
    scaled -= scaled.max()
    probs = np.exp(scaled)
    total = float(probs.sum(dtype=np.float64))
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        ranked = probs[order]
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        ahead = np.cumsum(ranked, dtype=np.float64) - ranked
        kept = int(np.count_nonzero(ahead < params.top_p * total)) or 1
        cdf = np.cumsum(ranked[:kept], dtype=np.float64)
        token = int(order[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), kept - 1)])
    else:
        cdf = np.cumsum(probs, dtype=np.float64)
        token = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(probs) - 1)
    return token, float(scaled[token] - np.log(total))


@dataclass
class Slot:
    index: int
    ids: list[int] = field(default_factory=list)  # tokens whose keys/values the slot holds, in order
    busy: bool = False
    last_used: float = 0.0
    weights_version: int = 0  # the weights its keys/values were computed with


@dataclass(frozen=True)
class Row:
    """One slot's share of a forward pass: ``tokens`` written at positions ``start``, ``start + 1``, …"""

    slot: int
    start: int
    tokens: list[int]


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    detok: IncrementalDetokenizer
    rng: Any  # the engine's random generator (see SlotEngine._new_rng); None when greedy
    cancelled: bool = False
    slot: Slot | None = None
    feed: list[int] = field(default_factory=list)  # tokens to write into the slot at the next forward
    generated: int = 0
    text: str = ""

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class SlotEngine:
    """A local engine's request scheduling; subclasses implement :meth:`_forward_rows`."""

    engine_name = "engine"

    def __init__(
        self,
        tokenizer: Any,
        *,
        eos_ids: AbstractSet[int],
        context_length: int,
        max_slots: int,
        batch_window_s: float,
        reuse_kv: bool,
        name: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.reuse_kv = reuse_kv
        self.batch_window_s = batch_window_s
        self.info = BackendInfo(
            name=self.engine_name, model=name, context_length=context_length,
            extra={"max_slots": max_slots, "reuse_kv": reuse_kv, **(extra or {})},
        )
        self._slots = [Slot(i) for i in range(max_slots)]
        self._inbox: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._weights_version = 0
        self.stats = {"prefill_tokens": 0, "reused_tokens": 0, "decode_steps": 0, "decode_rows": 0}
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        """Start the worker thread: the subclass calls this once its model is ready."""
        self._thread = threading.Thread(target=self._run, name=f"{self.engine_name}-engine", daemon=True)
        self._thread.start()

    # ---- what an engine implements ----------------------------------------------------------

    def _forward_rows(self, rows: list[Row]) -> Any:
        """Write each row's tokens into its slot; the logits after each row's last token, one row each
        (``result[i]`` is what :meth:`_sample_rows` reads for ``rows[i]``)."""
        raise NotImplementedError

    def _new_rng(self, seed: int) -> Any:
        """The random generator of one sampled request."""
        return np.random.default_rng(seed)

    def _sample_rows(self, logits: Any, params: list[SamplingParams], rngs: list[Any]) -> list[tuple[int, float]]:
        """The next token of each row of :meth:`_forward_rows`'s logits, and its logprob."""
        return [sample_token(row, p, rng) for row, p, rng in zip(logits, params, rngs)]

    def _truncate_slot(self, slot: int, keep: int) -> None:
        """Forget the slot's cache from position ``keep`` on (engines that overwrite in place need not)."""

    def _worker_setup(self) -> None:
        """Runs first on the worker thread."""

    def _worker_teardown(self) -> None:
        """Runs last on the worker thread (free native resources here)."""

    # ---- async side -------------------------------------------------------------------------

    def weights_changed(self) -> None:
        """The model's weights were updated (a training step): cached keys/values are no longer reused."""
        self._weights_version += 1

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise RuntimeError("backend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        if len(prompt_ids) >= self.context_length:
            raise PromptTooLongError(len(prompt_ids), self.context_length)
        rng = None
        if params.temperature >= GREEDY_BELOW:
            seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
            rng = self._new_rng(seed % 2**63)  # loops add turn and sample offsets to a seed
        req = _Request(
            prompt_ids=list(prompt_ids),
            params=params,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            detok=IncrementalDetokenizer(self.tokenizer),
            rng=rng,
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
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    # ---- worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        self._worker_setup()
        try:
            self._serve()
        finally:
            self._worker_teardown()

    def _serve(self) -> None:
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
            waiting = deque(r for r in waiting if not r.cancelled)
            active = [r for r in active if not self._retire_if_cancelled(r)]
            started: list[_Request] = []
            while waiting and self._free_slot_available():
                req = waiting.popleft()
                self._admit(req)
                started.append(req)
            # A prompt of one new token (a trajectory's next turn) joins the batched decode step;
            # longer prompts are fed first, together (the engine groups them as its forward prefers).
            prefills = [r for r in started if len(r.feed) > 1]
            decodes = active + [r for r in started if len(r.feed) == 1]
            if prefills:
                self._step(prefills)
            decodes += [r for r in prefills if r.slot is not None]
            if decodes:
                self._step(decodes, decode=True)
            active = [r for r in decodes if r.slot is not None]

    def _step(self, requests: list[_Request], *, decode: bool = False) -> None:
        """One forward over ``requests`` (each feeds its pending tokens), then sample each one's next token."""
        requests.sort(key=lambda r: r.slot.index)  # contiguous slots attend through a view, not a copy
        rows = [Row(r.slot.index, len(r.slot.ids), r.feed) for r in requests]
        try:
            logits = self._forward_rows(rows)
        except Exception as exc:  # these requests fail; the engine and the others go on
            if not decode and len(requests) > 1:
                for req in requests:  # prompts fed together: only the one that cannot be fed fails
                    self._step([req])
                return
            self._fail(requests, exc)
            return
        if decode:
            self.stats["decode_steps"] += 1
            self.stats["decode_rows"] += len(requests)
        try:
            samples = self._sample_rows(logits, [r.params for r in requests], [r.rng for r in requests])
        except Exception:  # sampled again row by row below, so that only the request at fault fails
            samples = None
        for i, req in enumerate(requests):
            req.slot.ids.extend(req.feed)
            req.feed = []
            try:
                token, logprob = samples[i] if samples else self._sample_rows(logits[i : i + 1], [req.params], [req.rng])[0]
                self._emit(req, token, logprob)
            except Exception as exc:  # a sampling error fails this request only
                self._fail([req], exc)

    def _admit(self, req: _Request) -> None:
        slot, reused = self._claim_slot(req.prompt_ids)
        req.slot = slot
        req.feed = req.prompt_ids[reused:]
        self.stats["prefill_tokens"] += len(req.feed)
        self.stats["reused_tokens"] += reused

    def _fail(self, requests: list[_Request], exc: Exception) -> None:
        log.exception("generation step failed")
        for req in requests:
            req.deliver(exc)
            if req.slot is not None:
                req.slot.ids.clear()  # what the failed forward wrote is unknown
                self._truncate_slot(req.slot.index, 0)
            self._release(req)

    def _retire_if_cancelled(self, req: _Request) -> bool:
        if req.cancelled:
            self._release(req)
            return True
        return False

    def _free_slot_available(self) -> bool:
        return any(not s.busy for s in self._slots)

    def _claim_slot(self, prompt: list[int]) -> tuple[Slot, int]:
        """A free slot and how many leading prompt tokens it already holds."""
        free = [s for s in self._slots if not s.busy]
        for slot in free:
            if slot.weights_version != self._weights_version:
                if slot.ids:
                    slot.ids.clear()
                    self._truncate_slot(slot.index, 0)  # stale keys/values must not be attended to
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
        if reused < len(best.ids):
            del best.ids[reused:]
            self._truncate_slot(best.index, reused)
        return best, reused

    def _release(self, req: _Request) -> None:
        if req.slot is not None:
            req.slot.busy = False
            req.slot.last_used = time.monotonic()
            if not self.reuse_kv and req.slot.ids:
                req.slot.ids.clear()
                self._truncate_slot(req.slot.index, 0)
            req.slot = None

    def _emit(self, req: _Request, token: int, logprob: float) -> None:
        """Deliver the next token of ``req``, and finish the request if it is done."""
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
            req.feed = [token]  # sampled and delivered; written into the slot at the next step
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
