"""Generation backends and the one rule that picks one."""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from agent_runtime.backends.base import Backend, BackendInfo, GenerationChunk, SamplingParams

log = logging.getLogger(__name__)

EngineName = Literal["auto", "transformers", "llamacpp", "vllm", "remote"]
ENGINES: tuple[str, ...] = ("auto", "transformers", "llamacpp", "vllm", "remote")


def choose_engine(engine: str, engine_url: str | None) -> str:
    """``auto``: remote when a URL is given, vLLM on a CUDA machine that has it, else transformers.
    llama.cpp runs only when asked for (``llamacpp``), installed or not: the CPU default stays the
    engine whose answers the demo agent was checked on."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if engine_url:
        chosen, why = "remote", "an engine URL was given"
    elif importlib.util.find_spec("vllm") is not None and _cuda_available():
        chosen, why = "vllm", "vLLM is installed and a CUDA device is present"
    else:
        chosen, why = "transformers", "no CUDA device with vLLM"
    log.info("engine=%s reason=%r", chosen, why)
    return chosen


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def make_backend(model: str, engine: str = "auto", engine_url: str | None = None, **kwargs) -> Backend:
    """Build the backend for a resolved model path or hub id."""
    engine = choose_engine(engine, engine_url)
    if engine == "transformers":
        from agent_runtime.backends.transformers_engine import TransformersBackend

        return TransformersBackend.from_pretrained(model, **kwargs)
    if engine == "llamacpp":
        from agent_runtime.backends.llamacpp_engine import LlamaCppBackend

        return LlamaCppBackend.from_pretrained(model, **kwargs)
    if engine == "remote":
        if not engine_url:
            raise ValueError("--engine remote needs --engine-url")
        from agent_runtime.backends.remote import RemoteBackend, served_model

        name, context_length = served_model(engine_url)
        kwargs.setdefault("model", name)
        kwargs.setdefault("context_length", context_length)
        return RemoteBackend.from_tokenizer_path(engine_url, model, **kwargs)
    from agent_runtime.backends.vllm_engine import VLLMBackend

    return VLLMBackend.from_pretrained(model, **kwargs)


__all__ = ["Backend", "BackendInfo", "GenerationChunk", "SamplingParams", "choose_engine", "make_backend"]
