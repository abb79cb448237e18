"""The vLLM backend: a thin adapter on vLLM's public in-process async engine.

API used (checked against vllm-project/vllm main as stored in 2026, ``vllm/v1/engine/async_llm.py``,
``vllm/sampling_params.py``, ``vllm/v1/engine/output_processor.py``; the same shape since 0.10):

- ``AsyncLLM.from_engine_args(AsyncEngineArgs(model=..., logprobs_mode=...))``
  (``vllm.AsyncLLMEngine`` is the same class on V1);
- ``engine.generate({"prompt_token_ids": ids}, vllm.SamplingParams(...), request_id)``, an async
  generator of ``RequestOutput``; ``outputs[0]`` has ``token_ids``, ``logprobs`` (one
  ``{token_id: Logprob}`` per token), ``finish_reason``, ``stop_reason``. With
  ``output_kind=RequestOutputKind.DELTA`` each output holds only the new tokens (several when the
  consumer falls behind: vLLM merges deltas), otherwise they are cumulative and diffed here;
- ``engine.abort(request_id)`` (vLLM also aborts when its generator is closed or cancelled);
- ``engine.shutdown()``.

Logprobs: the engine is built with ``logprobs_mode="processed_logprobs"`` (what TRL uses), i.e.
``log_softmax`` after temperature and top-k/top-p. That is our contract (``log_softmax(logits/T)``
before top-p) whenever ``top_p == 1``; vLLM's default ``raw_logprobs`` would match only at T = 1.

vLLM cannot be installed without CUDA, so the tests here cover the pure translation functions
and the generate/abort flow with stand-in objects only; nothing in this module has run against a
real vLLM in this repository's test suite.
"""

from __future__ import annotations

import inspect
import uuid
from contextlib import suppress
from typing import Any, AsyncIterator, Collection, Iterable, Sequence

from agent_runtime.backends.base import BackendInfo, GenerationChunk, SamplingParams
from agent_runtime.backends.finish import eos_ids_of, generation_config_eos_ids, map_finish_reason
from agent_runtime.detok import IncrementalDetokenizer

INSTALL_HINT = "vLLM is not installed: install the [vllm] extra on a CUDA machine (pip install 'tapo-agents[vllm]')"


class VLLMBackendError(RuntimeError):
    """vLLM failed the request or answered in a way this adapter cannot use."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return vllm


class VLLMBackend:
    """Serve a model with vLLM's async engine in this process."""

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        *,
        model_name: str = "model",
        context_length: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        sampling_params_type: Any = None,
        delta_output_kind: Any = None,
    ) -> None:
        """``engine``: a started ``AsyncLLM``. ``sampling_params_type`` and ``delta_output_kind``
        default to ``vllm.SamplingParams`` and ``RequestOutputKind.DELTA`` (tests pass stand-ins)."""
        if sampling_params_type is None:
            vllm = import_vllm()
            sampling_params_type = vllm.SamplingParams
            delta_output_kind = delta_output_kind or _delta_output_kind()
        self.engine = engine
        self.tokenizer = tokenizer
        self._sampling_params_type = sampling_params_type
        self._delta_output_kind = delta_output_kind  # None: outputs are cumulative, diffed here
        model_config = getattr(engine, "model_config", None)
        engine_ctx = getattr(model_config, "max_model_len", None)
        if context_length and engine_ctx:
            context_length = min(context_length, engine_ctx)
        self.eos_ids = eos_ids_of(tokenizer, eos_token_ids)
        self.info = BackendInfo(
            name="vllm",
            model=model_name,
            context_length=context_length or engine_ctx or 4096,
            extra={"logprobs_mode": getattr(model_config, "logprobs_mode", None)},
        )
        self._closed = False

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        context_length: int | None = None,
        logprobs_mode: str | None = "processed_logprobs",
        tokenizer_path: str | None = None,
        name: str | None = None,
        **engine_kwargs: Any,
    ) -> "VLLMBackend":
        """Start an engine on ``path``; ``engine_kwargs`` go to ``AsyncEngineArgs`` as they are
        (``gpu_memory_utilization``, ``tensor_parallel_size``, ``enable_prefix_caching``...)."""
        vllm = import_vllm()
        from transformers import AutoTokenizer

        if context_length is not None:
            engine_kwargs["max_model_len"] = context_length
        if logprobs_mode is not None:  # vLLM < 0.10.1 has no such argument
            engine_kwargs["logprobs_mode"] = logprobs_mode
        args = vllm.AsyncEngineArgs(model=str(path), tokenizer=str(tokenizer_path or path), **engine_kwargs)
        engine = _async_engine_class(vllm).from_engine_args(args)
        return cls(
            engine,
            AutoTokenizer.from_pretrained(tokenizer_path or path),
            model_name=name or str(path),
            context_length=context_length,
            eos_token_ids=generation_config_eos_ids(str(path)),
        )

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise RuntimeError("backend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        request_id = f"tapo-{uuid.uuid4().hex}"
        sampling = self._sampling_params_type(**sampling_params_kwargs(params, self._delta_output_kind))
        translator = RequestOutputTranslator(
            self.tokenizer, self.eos_ids, logprobs=params.logprobs, cumulative=self._delta_output_kind is None
        )
        outputs = self.engine.generate({"prompt_token_ids": [int(t) for t in prompt_ids]}, sampling, request_id)
        final: GenerationChunk | None = None
        try:
            async for request_output in outputs:
                chunk = translator.translate(request_output)
                if chunk is None:
                    continue
                if chunk.finish_reason is None:
                    yield chunk
                else:
                    final = chunk  # let vLLM's generator end on its own before handing this out
        finally:
            if final is None:
                # Closed early, cancelled or failed: free the engine's sequence now. Closing vLLM's
                # generator aborts in current versions; the explicit abort covers the others.
                await outputs.aclose()
                with suppress(Exception):
                    aborted = self.engine.abort(request_id)
                    if inspect.isawaitable(aborted):
                        await aborted
        if final is None:
            raise VLLMBackendError(f"vLLM's stream for {request_id} ended without a finished output")
        yield final

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


# ---- pure translation ------------------------------------------------------------------------


def sampling_params_kwargs(params: SamplingParams, output_kind: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams``.

    ``logprobs=0`` asks for the sampled token's logprob only. Stop strings stay in the output
    (our contract), and text is decoded without special tokens, which is also the text vLLM
    matches stop strings on, as the transformers backend does. ``top_k``/``min_p``/penalties are
    left at vLLM's neutral defaults (their "disabled" values changed across versions).
    """
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop),
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
        "logprobs": 0 if params.logprobs else None,
    }
    if params.allowed_token_ids is not None:
        kwargs["allowed_token_ids"] = sorted(params.allowed_token_ids)
    if output_kind is not None:
        kwargs["output_kind"] = output_kind
    return kwargs


class RequestOutputTranslator:
    """The ``RequestOutput`` s of one request, delta or cumulative, as :class:`GenerationChunk` s."""

    def __init__(self, tokenizer: Any, eos_ids: Collection[int], *, logprobs: bool, cumulative: bool) -> None:
        self.eos_ids = eos_ids
        self.want_logprobs = logprobs
        self.cumulative = cumulative
        self.detok = IncrementalDetokenizer(tokenizer)
        self.seen = 0  # tokens already handed out
        self.last_token: int | None = None

    def translate(self, request_output: Any) -> GenerationChunk | None:
        """The new tokens of ``request_output`` (None when there are none and it is not the end)."""
        if not request_output.outputs:
            return None
        output = request_output.outputs[0]
        all_ids = [int(t) for t in output.token_ids]
        if self.cumulative:
            ids, start = all_ids[self.seen :], self.seen
        else:
            ids, start = all_ids, None
        if output.finish_reason == "error":
            raise VLLMBackendError(f"vLLM failed request {request_output.request_id!r}")
        logprobs = sampled_logprobs(ids, output.logprobs, start) if self.want_logprobs else None
        last = ids[-1] if ids else self.last_token
        finish, stop_str = map_finish_reason(output.finish_reason, output.stop_reason, last, self.eos_ids)
        if not ids and finish is None:
            return None
        self.seen += len(ids)
        self.last_token = last
        text = self.detok.add(ids)
        if finish is not None:
            text += self.detok.flush()
        return GenerationChunk(ids, text, logprobs, finish, stop_str)


def sampled_logprobs(ids: list[int], entries: Sequence[Any] | None, start: int | None = None) -> list[float]:
    """The logprob of each sampled id from vLLM's per-position ``{token_id: Logprob}`` entries.

    ``start``: where ``ids`` begin in ``entries`` (cumulative outputs); None means ``entries``
    ends with them (delta outputs; vLLM slices them as ``logprobs[-len(token_ids):]``, which is
    everything, not nothing, when a final output has no new token).
    """
    if not ids:
        return []
    if entries is None:
        raise VLLMBackendError("logprobs were requested but vLLM returned none")
    first = len(entries) - len(ids) if start is None else start
    if first < 0 or first + len(ids) > len(entries):
        raise VLLMBackendError(f"vLLM returned {len(entries)} logprob entries for {len(ids)} new tokens")
    values = []
    for offset, token in enumerate(ids):
        entry = entries[first + offset]
        if entry is None or token not in entry:
            raise VLLMBackendError(f"vLLM returned no logprob for sampled token {token}")
        values.append(float(entry[token].logprob))
    return values


def _delta_output_kind() -> Any:
    try:
        from vllm.sampling_params import RequestOutputKind
    except ImportError:
        return None
    return RequestOutputKind.DELTA


def _async_engine_class(vllm: Any) -> Any:
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:
        return vllm.AsyncLLMEngine
    return AsyncLLM
