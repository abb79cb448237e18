"""The ``trl-vllm`` backend: the agent loop generates through the vLLM that TRL's GRPOTrainer drives.

Only that vLLM receives the new weights after each optimizer step (TRL syncs them right before it
calls ``rollout_func``), so training rollouts must generate through it, not through an engine of
their own. TRL 1.16 holds it in ``trainer.vllm_generation`` (``trl/generation/vllm_generation.py``):

- colocate mode: ``vllm_generation.llm``, a ``vllm.LLM`` built with
  ``logprobs_mode="processed_logprobs"`` (``_init_vllm``). Its ``generate(prompts, sampling_params,
  *, use_tqdm)`` is blocking, takes ``{"prompt_token_ids": ids}`` prompts and one
  ``SamplingParams`` per prompt, and returns one final ``RequestOutput`` per prompt, in order.
- server mode: ``vllm_generation.vllm_client``, a ``trl.generation.vllm_client.VLLMClient`` (on the
  main process only). Its ``generate(prompts=[ids...], n, temperature, top_p, top_k, min_p,
  max_tokens, logprobs, generation_kwargs)`` posts ONE ``/v1/completions`` request to vLLM's own
  server; ``generation_kwargs`` go into the body as they are (``stop``, ``seed``,
  ``include_stop_str_in_output``...). It returns ``{"prompt_ids", "completion_ids", "logprobs",
  "logprob_token_ids"}`` and drops each choice's ``finish_reason``/``stop_reason``: they are
  inferred here from the ids (:func:`infer_finish`).

Both are batch, blocking APIs, while the loop runs many trajectories as asyncio tasks that each
call ``generate`` once per turn at their own time (tools finish at different times). A
:class:`MicroBatcher` collects those calls and flushes them as ONE engine call in a worker thread,
so the event loop keeps running tools meanwhile and a rollout of N trajectories makes about one
engine call per "wave" of turns instead of N.

Usage in a ``rollout_func`` (the trainer builds its vLLM in ``__init__``, so build this lazily)::

    backend = backend or TRLVLLMBackend.from_trainer(trainer)
    with backend.awake():  # wakes a sleeping colocated vLLM (vllm_enable_sleep_mode); else nothing
        trajectories = asyncio.run(rollout(prompt_ids, backend, tools, sampling=...))

vLLM cannot be installed here (no CUDA): the tests drive this module with stand-in objects shaped
like ``vllm.LLM`` / ``RequestOutput`` and ``VLLMClient``; nothing here has run against a real vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from agent_runtime.backends.base import (
    BackendInfo,
    FinishReason,
    GenerationChunk,
    PromptTooLongError,
    SamplingParams,
)
from agent_runtime.backends.finish import eos_ids_of
from agent_runtime.backends.vllm_engine import (
    RequestOutputTranslator,
    VLLMBackendError,
    import_vllm,
    sampling_params_kwargs,
)
from agent_runtime.detok import decode

log = logging.getLogger(__name__)

Request = tuple[list[int], SamplingParams]
Result = GenerationChunk | BaseException  # one per request: a request can fail alone
Req = TypeVar("Req")
Res = TypeVar("Res")

# TRL's VLLMClient mounts a connection pool of this size (``_DEFAULT_GENERATION_CONCURRENCY``).
SERVER_MAX_PARALLEL_CALLS = 64


class TRLVLLMError(RuntimeError):
    """TRL's vLLM failed a request or a batch, or cannot be used the way this backend needs."""


# ---- the micro-batcher (pure asyncio) ----------------------------------------------------------


@dataclass(eq=False)
class _Waiting(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[Res]


def _use_current_cuda_device() -> Callable[[], None] | None:
    """An initializer that gives a worker thread the creating thread's CUDA device: the current
    device is per thread, and under ``accelerate launch`` rank k's vLLM lives on ``cuda:k``."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    return lambda: torch.cuda.set_device(device)


class MicroBatcher(Generic[Req, Res]):
    """Many tasks' requests flushed as one blocking ``run_batch`` call in a worker thread.

    A flush happens once ``max_batch`` requests wait, or when no new request arrived for
    ``window_s`` (the waiting ones are all there is for now), or ``max_delay_s`` after the flusher
    started collecting (so that a steady trickle cannot hold a batch back). One flush runs at a
    time (``vllm.LLM`` is not thread-safe); the next batch accumulates meanwhile.

    ``run_batch`` returns one result or exception per request, in order; an exception of its own
    fails the whole batch (and only that batch). The batcher binds to the running event loop and
    starts afresh under a new one (a ``rollout_func`` typically calls ``asyncio.run`` per step).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], Sequence[Res | BaseException]],
        *,
        max_batch: int = 256,
        window_s: float = 0.005,
        max_delay_s: float = 0.05,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_delay_s = max(max_delay_s, window_s)
        # A thread of our own: the loop's default executor may be full of sync tool calls, and a
        # flush queued behind them would stall every trajectory.
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="trl-vllm",
                                                        initializer=_use_current_cuda_device())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Waiting[Req, Res]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrivals = 0
        self._closed = False
        self.calls = 0  # engine calls made
        self.requests = 0  # requests sent in them

    async def submit(self, request: Req) -> Res:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        wakeup = self._bind()
        entry: _Waiting[Req, Res] = _Waiting(request, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        self._arrivals += 1
        wakeup.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            # Not sent yet: it never will be. Already sent: an offline vLLM call cannot abort one
            # of its requests, so that result is dropped when the batch returns.
            with suppress(ValueError):
                self._waiting.remove(entry)
            raise

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with suppress(asyncio.CancelledError):
                    await task
        self._fail(self._waiting, lambda: RuntimeError("the backend was closed"))
        self._waiting = []
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _bind(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop: whatever waited under the old one went away with it.
            self._loop, self._waiting, self._wakeup, self._task = loop, [], asyncio.Event(), None
        assert self._wakeup is not None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush_forever(self._wakeup), name="trl-vllm-batcher")
        return self._wakeup

    async def _flush_forever(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await wakeup.wait()
            await self._collect(loop)
            batch = [e for e in self._waiting[: self.max_batch] if not e.future.done()]
            del self._waiting[: self.max_batch]
            if not self._waiting:
                wakeup.clear()
            if batch:
                await self._flush(loop, batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while requests keep arriving, up to ``max_delay_s`` or a full batch."""
        deadline = loop.time() + self.max_delay_s
        while len(self._waiting) < self.max_batch:
            seen = self._arrivals
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(self.window_s, remaining))
            if self._arrivals == seen:
                return

    async def _flush(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting[Req, Res]]) -> None:
        self.calls += 1
        self.requests += len(batch)
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [e.request for e in batch])
            if len(results) != len(batch):
                raise TRLVLLMError(f"the engine returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:
            self._fail(batch, lambda: RuntimeError("the backend was closed during generation"))
            raise
        except Exception as exc:  # noqa: BLE001 - one engine call failed: fail its batch, keep serving the next
            log.warning("a vLLM batch of %d requests failed: %s", len(batch), exc)
            message = f"the vLLM call for a batch of {len(batch)} requests failed: {type(exc).__name__}: {exc}"
            cause = exc
            self._fail(batch, lambda: _caused(TRLVLLMError(message), cause))
            return
        for entry, result in zip(batch, results):
            if entry.future.done():  # its caller was cancelled while the batch ran
                continue
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)

    @staticmethod
    def _fail(entries: Sequence[_Waiting[Any, Any]], make_error: Callable[[], BaseException]) -> None:
        # One exception object per waiter: each is raised (and gets its traceback) in its own task.
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(make_error())


def _caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


# ---- engines: the only code that touches TRL's vLLM objects --------------------------------------


class BatchEngine(Protocol):
    """One blocking call for many requests; a result or an exception per request, in order."""

    def generate_batch(self, requests: Sequence[Request]) -> list[Result]: ...


class ColocateEngine:
    """``vllm.LLM.generate`` with one ``SamplingParams`` per prompt: the whole batch in one call."""

    def __init__(self, llm: Any, tokenizer: Any, eos_ids: Collection[int], *, sampling_params_type: Any = None) -> None:
        """``sampling_params_type`` defaults to ``vllm.SamplingParams`` (tests pass a stand-in)."""
        self.llm = llm
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self._sampling_params_type = sampling_params_type or import_vllm().SamplingParams

    def generate_batch(self, requests: Sequence[Request]) -> list[Result]:
        prompts = [{"prompt_token_ids": ids} for ids, _ in requests]
        sampling = [self._sampling_params_type(**sampling_params_kwargs(params)) for _, params in requests]
        outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=False)
        if len(outputs) != len(requests):
            raise TRLVLLMError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        return [
            translate_request_output(output, ids, params, self.tokenizer, self.eos_ids)
            for output, (ids, params) in zip(outputs, requests)
        ]


class ServerEngine:
    """``VLLMClient.generate`` per group of requests that share their sampling settings.

    One ``/v1/completions`` request carries one set of sampling settings for all its prompts, so
    requests are grouped (:func:`plan_server_calls`); seeds are dropped unless ``keep_seeds`` (with
    per-trajectory seeds every request would be its own group). Groups are sent concurrently (the server batches
    concurrent requests itself); TRL's client is used from several threads the same way by TRL.
    """

    def __init__(
        self,
        client: Any,
        tokenizer: Any,
        eos_ids: Collection[int],
        context_length: int | None,
        *,
        max_parallel_calls: int = SERVER_MAX_PARALLEL_CALLS,
        keep_seeds: bool = False,
    ) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.max_parallel_calls = max_parallel_calls
        # One request carries one seed for all its prompts: per-trajectory seeds would send every
        # trajectory alone. Training needs batched calls more than reproducible samples, so by
        # default seeds are dropped and requests that agree on the rest share a call.
        self.keep_seeds = keep_seeds

    def generate_batch(self, requests: Sequence[Request]) -> list[Result]:
        if not self.keep_seeds:
            requests = [(ids, replace(params, seed=None)) for ids, params in requests]
        results: list[Result] = [TRLVLLMError("not generated")] * len(requests)

        def run(call: tuple[list[int], int]) -> None:
            indices, max_tokens = call
            group = [requests[i] for i in indices]
            try:
                output = self.client.generate(
                    prompts=[ids for ids, _ in group], **server_generate_kwargs(group[0][1], max_tokens)
                )
                chunks = server_results(output, group, self.tokenizer, self.eos_ids, self.context_length)
            except Exception as exc:  # noqa: BLE001 - this call failed: its requests fail, the other groups stand
                message = f"the vLLM server call for {len(group)} requests failed: {type(exc).__name__}: {exc}"
                chunks = [_caused(TRLVLLMError(message), exc) for _ in group]
            for i, chunk in zip(indices, chunks):
                results[i] = chunk

        calls = plan_server_calls(requests, self.context_length)
        if len(calls) == 1:
            run(calls[0])
        else:
            with ThreadPoolExecutor(max_workers=min(len(calls), self.max_parallel_calls)) as pool:
                list(pool.map(run, calls))
        return results


# ---- pure translation --------------------------------------------------------------------------


def translate_request_output(
    output: Any, prompt_ids: Sequence[int], params: SamplingParams, tokenizer: Any, eos_ids: Collection[int]
) -> Result:
    """One final ``RequestOutput`` of ``LLM.generate`` as one chunk (or the error of that request)."""
    echoed = getattr(output, "prompt_token_ids", None)
    if echoed is not None and list(echoed) != list(prompt_ids):
        return TRLVLLMError("vLLM answered with the output of another prompt")
    translator = RequestOutputTranslator(tokenizer, eos_ids, logprobs=params.logprobs, cumulative=True)
    try:
        chunk = translator.translate(output)
    except VLLMBackendError as exc:
        return TRLVLLMError(str(exc))
    if chunk is None or chunk.finish_reason is None:
        return TRLVLLMError("vLLM returned an output that has not finished")
    return chunk


def server_generate_kwargs(params: SamplingParams, max_tokens: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``VLLMClient.generate`` for ``params`` (all but ``prompts``).

    Its own arguments take the sampling settings it knows; the rest go in ``generation_kwargs``,
    which it merges into the request body as they are. ``top_k=0``/``min_p=0``/penalties are
    sent neutral because vLLM's server fills any field left out from the model's
    ``generation_config.json``; see ``agent_runtime.backends.remote`` for the field names.
    """
    extra: dict[str, Any] = {
        "stop": list(params.stop),
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    if params.seed is not None:
        extra["seed"] = params.seed
    return {
        "n": 1,
        "repetition_penalty": 1.0,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "max_tokens": params.max_tokens if max_tokens is None else max_tokens,
        "logprobs": 0 if params.logprobs else None,
        "generation_kwargs": extra,
    }


def plan_server_calls(requests: Sequence[Request], context_length: int | None) -> list[tuple[list[int], int]]:
    """Group requests into server calls: ``[(request indices, max_tokens to send)]``.

    Requests share a call when all settings but ``max_tokens`` agree. ``max_tokens`` need not: a
    call asks for the largest of its group and each result is cut back to its own (a sample cut
    at k tokens is what ``max_tokens=k`` would have sampled: same steps, same seeded draws, and
    stop strings and EOS are checked at every token either way). A prompt must still leave room
    for what is asked (the server refuses the whole request otherwise), so each request accepts
    any value in ``[its max_tokens, context_length - len(prompt)]``; grouping is the classic
    interval stabbing: the fewest calls that fit every request.
    """

    def room(i: int) -> float:
        return math.inf if context_length is None else context_length - len(requests[i][0])

    by_settings: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, params) in enumerate(requests):
        key = (params.temperature, params.top_p, params.seed, params.stop, params.logprobs)
        by_settings.setdefault(key, []).append(i)
    calls: list[tuple[list[int], int]] = []
    for indices in by_settings.values():
        pending = sorted(indices, key=room)  # the tightest room first: it bounds its call
        while pending:
            point = room(pending[0])
            fits = [i == pending[0] or requests[i][1].max_tokens <= point for i in pending]
            group = [i for i, ok in zip(pending, fits) if ok]
            pending = [i for i, ok in zip(pending, fits) if not ok]
            calls.append((sorted(group), max(requests[i][1].max_tokens for i in group)))
    return calls


def server_results(
    output: dict[str, Any],
    group: Sequence[Request],
    tokenizer: Any,
    eos_ids: Collection[int],
    context_length: int | None,
) -> list[Result]:
    """The chunks of one ``VLLMClient.generate`` answer, one per request of the group."""
    completions = output["completion_ids"]
    if len(completions) != len(group):
        raise TRLVLLMError(f"the server returned {len(completions)} completions for {len(group)} prompts")
    prompts = output.get("prompt_ids") or [None] * len(group)
    rows = output.get("logprobs")
    row_ids = output.get("logprob_token_ids")
    results: list[Result] = []
    for k, (prompt, params) in enumerate(group):
        if prompts[k] is not None and list(prompts[k]) != prompt:
            results.append(TRLVLLMError("the server answered with the completion of another prompt"))
            continue
        try:
            results.append(
                server_completion(
                    prompt,
                    params,
                    [int(t) for t in completions[k]],
                    None if rows is None else rows[k],
                    None if row_ids is None else row_ids[k],
                    tokenizer,
                    eos_ids,
                    context_length,
                )
            )
        except TRLVLLMError as exc:
            results.append(exc)
    return results


def server_completion(
    prompt: Sequence[int],
    params: SamplingParams,
    ids: list[int],
    rows: Sequence[Sequence[float | None]] | None,
    row_ids: Sequence[Sequence[int]] | None,
    tokenizer: Any,
    eos_ids: Collection[int],
    context_length: int | None,
) -> GenerationChunk:
    """One completion from the server as a chunk: cut to its own ``max_tokens``, finish inferred."""
    ids = ids[: params.max_tokens]  # the call may have asked for more (plan_server_calls)
    text = decode(tokenizer, ids)
    finish, stop_str = infer_finish(ids, text, params, eos_ids, len(prompt), context_length)
    logprobs = None
    if params.logprobs:
        if rows is None:
            raise TRLVLLMError("logprobs were requested but the vLLM server returned none")
        logprobs = sampled_server_logprobs(ids, rows, row_ids)
    return GenerationChunk(ids, text, logprobs, finish, stop_str)


def infer_finish(
    ids: Sequence[int],
    text: str,
    params: SamplingParams,
    eos_ids: Collection[int],
    prompt_len: int,
    context_length: int | None,
) -> tuple[FinishReason, str | None]:
    """Why a completion ended, from its ids alone (``VLLMClient`` drops ``finish_reason``).

    In vLLM's own order: an EOS (kept as the last id) wins; then a stop string in the text (vLLM
    matches them on the text decoded without special tokens, and stops at the first one, so the
    earliest-ending match is the one); then the length caps. Anything else (an abort, a stop
    token id not known as EOS here) is ``abort``.
    """
    if ids and ids[-1] in eos_ids:
        return "eos", None
    matches = [(found + len(s), n, s) for n, s in enumerate(params.stop) if s and (found := text.find(s)) >= 0]
    if matches:
        return "stop", min(matches)[2]
    if len(ids) >= params.max_tokens:
        return "length", None
    if context_length is not None and prompt_len + len(ids) >= context_length:
        return "length", None
    log.warning("a completion of %d tokens ended for no reason this backend can tell; reporting abort", len(ids))
    return "abort", None


def sampled_server_logprobs(
    ids: Sequence[int], rows: Sequence[Sequence[float | None]], row_ids: Sequence[Sequence[int]] | None
) -> list[float]:
    """The sampled token's logprob at each position from ``VLLMClient``'s per-position lists
    (sorted by probability, the sampled token always among them; one entry with ``logprobs=0``)."""
    if len(rows) < len(ids):
        raise TRLVLLMError(f"the vLLM server returned {len(rows)} logprob entries for {len(ids)} tokens")
    values: list[float] = []
    for j, token in enumerate(ids):
        candidates = row_ids[j] if row_ids is not None else [token]
        value = next((v for t, v in zip(candidates, rows[j]) if t == token), None)
        if value is None:  # missing, or NaN (TRL turns NaN into None)
            raise TRLVLLMError(f"the vLLM server returned no logprob for sampled token {token}")
        values.append(float(value))
    return values


# ---- the backend -------------------------------------------------------------------------------


class TRLVLLMBackend:
    """The :class:`~agent_runtime.backends.base.Backend` on TRL's vLLM, batched across a rollout.

    ``generate`` yields one chunk per turn (the engines are not streaming). Build it with
    :meth:`from_trainer`; the constructor takes any :class:`BatchEngine` (tests use stand-ins).
    """

    def __init__(
        self,
        engine: BatchEngine,
        tokenizer: Any,
        *,
        context_length: int,
        model_name: str = "policy",
        max_batch: int = 256,
        window_s: float = 0.005,
        max_delay_s: float = 0.05,
        vllm_generation: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``vllm_generation``: TRL's ``VLLMGeneration`` when its colocated vLLM sleeps between
        generations (``vllm_enable_sleep_mode``); :meth:`awake` then wakes it around a rollout."""
        self.engine = engine
        self.tokenizer = tokenizer
        self.info = BackendInfo(
            name="trl-vllm", model=model_name, context_length=context_length, extra=dict(extra or {})
        )
        self._batcher: MicroBatcher[Request, GenerationChunk] = MicroBatcher(
            engine.generate_batch, max_batch=max_batch, window_s=window_s, max_delay_s=max_delay_s
        )
        self._sleepy = vllm_generation
        self._awake = vllm_generation is None
        self._closed = False

    @classmethod
    def from_trainer(cls, trainer: Any, *, client: Any = None, **kwargs: Any) -> TRLVLLMBackend:
        """The backend on ``trainer``'s vLLM (a TRL 1.16 ``GRPOTrainer`` with ``use_vllm=True``).

        Colocate mode uses ``trainer.vllm_generation.llm``; server mode its ``vllm_client``, which
        TRL creates on the main process only: on other ranks pass ``client`` (a ``VLLMClient`` of
        the same server) and call ``trainer.accelerator.wait_for_everyone()`` before generating, so
        that the main process has finished pushing the weights. ``kwargs`` go to the constructor
        (``max_batch``, ``window_s``...).
        """
        if not getattr(trainer, "use_vllm", False):
            raise TRLVLLMError("the trainer does not use vLLM: set use_vllm=True in its GRPOConfig")
        generation = trainer.vllm_generation
        mode = getattr(trainer, "vllm_mode", None) or generation.mode
        # GRPOTrainer keeps the text tokenizer of a processor in ``_tokenizer`` (grpo_trainer.py).
        tokenizer = getattr(trainer, "_tokenizer", None) or trainer.processing_class
        eos_ids = eos_ids_of(tokenizer, getattr(trainer, "eos_token_ids", None))
        model_name = str(getattr(trainer.model, "name_or_path", None) or "policy")
        extra: dict[str, Any] = {"mode": mode}
        if mode == "colocate":
            if getattr(generation, "tensor_parallel_size", 1) > 1:
                # With TP the ranks of a group must call llm.generate in lockstep on the same
                # prompts (TRL gathers them first); per-rank micro-batches would deadlock.
                raise TRLVLLMError("vllm_tensor_parallel_size > 1 in colocate mode is not supported by this backend")
            model_config = generation.llm.llm_engine.model_config
            context_length = int(model_config.max_model_len)
            logprobs_mode = getattr(model_config, "logprobs_mode", None)
            engine: BatchEngine = ColocateEngine(generation.llm, tokenizer, eos_ids)
            sleepy = generation if getattr(generation, "enable_sleep_mode", False) else None
        elif mode == "server":
            # TRL makes its client (with the weight-sync communicator) on the main process only; the
            # other ranks get a plain client of the same server for generation.
            client = client or getattr(generation, "vllm_client", None) or _rank_client(generation)
            model_name = str(getattr(client, "model", None) or model_name)
            server = _server_model_config(client)
            context_length = server.get("max_model_len") or _trainer_context_length(trainer)
            logprobs_mode = server.get("logprobs_mode")
            engine = ServerEngine(client, tokenizer, eos_ids, context_length)
            sleepy = None
        else:
            raise TRLVLLMError(f"unknown vllm_mode {mode!r}: expected 'colocate' or 'server'")
        if logprobs_mode is not None and logprobs_mode != "processed_logprobs":
            log.warning(
                "TRL's vLLM runs with logprobs_mode=%s: rollout logprobs are not log_softmax(logits / T) "
                "unless T == 1; use processed_logprobs",
                logprobs_mode,
            )
        extra["logprobs_mode"] = logprobs_mode
        return cls(
            engine,
            tokenizer,
            context_length=int(context_length),
            model_name=model_name,
            vllm_generation=sleepy,
            extra=extra,
            **kwargs,
        )

    @property
    def engine_calls(self) -> int:
        """Engine calls made so far (each one a batch of requests)."""
        return self._batcher.calls

    @property
    def requests_sent(self) -> int:
        return self._batcher.requests

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise RuntimeError("backend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        if not self._awake:
            raise TRLVLLMError("the colocated vLLM sleeps between generations: run the rollout inside backend.awake()")
        prompt = [int(t) for t in prompt_ids]
        room = self.info.context_length - len(prompt)
        if room < 1:
            raise PromptTooLongError(len(prompt), self.info.context_length)
        # Checked here, per request: vLLM would refuse it, and with it the whole batch.
        if params.max_tokens > room:
            params = replace(params, max_tokens=room)
        yield await self._batcher.submit((prompt, params))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._batcher.aclose()

    # Sleep mode (colocate, ``vllm_enable_sleep_mode``), mirroring VLLMGeneration.generate: TRL's
    # weight sync before rollout_func wakes the weights only; the KV cache must be woken to
    # generate, and TRL sleeps at level 2 afterwards (weights discarded), marking it so that the
    # next generation re-pushes them.

    def wake(self) -> None:
        generation = self._sleepy
        if generation is not None and not self._awake:
            if getattr(generation, "_llm_weights_sleeping", False):
                generation.sync_weights()
            generation.llm.wake_up(tags=["kv_cache"])
        self._awake = True

    def sleep(self) -> None:
        generation = self._sleepy
        if generation is not None and self._awake:
            generation.llm.sleep(level=2)
            generation._llm_weights_sleeping = True
            self._awake = False

    @contextmanager
    def awake(self) -> Iterator[TRLVLLMBackend]:
        """Wake a sleeping colocated vLLM for the rollout inside, and put it back to sleep after."""
        self.wake()
        try:
            yield self
        finally:
            self.sleep()


def _rank_client(generation: Any) -> Any:
    """A ``VLLMClient`` of the server TRL's main process talks to, for generation on another rank."""
    from trl.generation.vllm_client import VLLMClient

    base_url = getattr(generation, "server_base_url", None) or (
        f"http://{generation.server_host}:{generation.server_port}")
    return VLLMClient(base_url=base_url, connection_timeout=getattr(generation, "server_timeout", 0.0))


def _server_model_config(client: Any) -> dict[str, Any]:
    """``model_config`` of the server's ``/server_info`` (what TRL reads ``logprobs_mode`` from)."""
    try:
        config = client.get_server_info().get("model_config") or {}
    except Exception as exc:  # noqa: BLE001 - optional: the settings below have fallbacks
        log.warning("could not read the vLLM server's configuration: %s", exc)
        return {}
    return config if isinstance(config, dict) else {}


def _trainer_context_length(trainer: Any) -> int:
    """TRL's ``vllm_max_model_length`` setting, else the model's ``max_position_embeddings``."""
    configured = getattr(getattr(trainer, "args", None), "vllm_max_model_length", None)
    if configured:
        return int(configured)
    config = trainer.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(config.max_position_embeddings)
