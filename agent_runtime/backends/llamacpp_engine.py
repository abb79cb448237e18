"""The llama.cpp backend: GGUF files through llama-cpp-python's low-level API (extra ``[llamacpp]``).

llama-cpp-python's high-level ``Llama`` decodes one sequence at a time, so concurrent trajectories
would take turns. Here one llama.cpp context holds one KV sequence per slot (``n_seq_max`` sequences,
each with its own cells), and :mod:`slot_engine`'s scheduler drives it: each step is one
``llama_decode`` of a ``llama_batch`` that carries one token for every generating trajectory, tagged
with its sequence id; a prompt, or the tool output appended to a trajectory that already sits in its
slot, is fed as that sequence's tokens at its own positions. Token ids come in and go out as ids,
so a trajectory's history is never re-tokenized. Sampling and logprobs are the scheduler's
(:func:`~agent_runtime.backends.slot_engine.sample_token`, numpy on llama.cpp's logits): the same
definition of a logprob as the transformers engine's, not llama.cpp's own samplers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import AbstractSet, Any

import numpy as np

from agent_runtime.backends.finish import eos_ids_of, generation_config_eos_ids
from agent_runtime.backends.slot_engine import Row, SlotEngine

log = logging.getLogger(__name__)

__all__ = ["LlamaCppBackend", "prepare_gguf"]

KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type values of the KV cache's keys and values
FLASH_ATTN_DISABLED = 0  # llama_flash_attn_type
DEFAULT_CONTEXT = 4096  # per trajectory, when the model allows it: KV cells are allocated up front
DEFAULT_GGUF_TYPE = "q8_0"  # what a checkpoint is exported as to serve it (BENCHMARKS.md, CPU engines)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ValueError("--engine llamacpp needs llama-cpp-python: pip install 'tapo-agents[llamacpp]' "
                         "(it compiles llama.cpp, a few minutes on first install)") from None
    if not log.isEnabledFor(logging.DEBUG):
        # llama.cpp reports every tensor it loads; keep it to errors unless we are debugging.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare_gguf(path: str, gguf_type: str = DEFAULT_GGUF_TYPE) -> Path:
    """The GGUF file llama.cpp serves for a resolved ``--model`` path: a directory converted from a
    GGUF file is served from that file as it is; any other checkpoint (a Hugging Face directory, a LoRA
    adapter such as the demo agent) is exported once (``gguf_type``: f32, f16 or q8_0) and cached."""
    from agent_runtime.models.gguf import gguf_origin

    gguf_file = gguf_origin(path)
    if gguf_file is None:
        from agent_runtime.models.gguf_export import exported_gguf_path

        gguf_file = exported_gguf_path(str(path), gguf_type)
    return gguf_file


class LlamaCppBackend(SlotEngine):
    """Serve a GGUF file with llama.cpp: one KV sequence per slot, one batched decode per step."""

    engine_name = "llamacpp"

    def __init__(
        self,
        gguf_path: str | Path,
        tokenizer: Any,
        *,
        eos_ids: AbstractSet[int] | None = None,
        max_slots: int = 16,
        context_length: int | None = None,
        kv_type: str = "f16",
        n_threads: int | None = None,
        n_batch: int = 512,
        batch_window_s: float = 0.002,
        reuse_kv: bool = True,
        name: str | None = None,
    ) -> None:
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        self._ll = ll = _import_llama_cpp()
        self.gguf_path = Path(gguf_path)
        ll.llama_backend_init()
        model_params = ll.llama_model_default_params()
        self._model = ll.llama_model_load_from_file(str(self.gguf_path).encode(), model_params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {self.gguf_path}")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        trained = ll.llama_model_n_ctx_train(self._model) or DEFAULT_CONTEXT
        per_slot = min(context_length or min(trained, DEFAULT_CONTEXT), trained)
        threads = n_threads or cpu_count()
        ctx_params = ll.llama_context_default_params()
        ctx_params.n_seq_max = max_slots
        ctx_params.n_ctx = per_slot * max_slots
        ctx_params.kv_unified = False  # each sequence attends over its own cells only
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.type_k = ctx_params.type_v = KV_TYPES[kv_type]
        ctx_params.no_perf = True
        if kv_type == "f32":
            # llama.cpp's CPU flash attention rounds through f16 (logprobs off by up to 6e-3 on the
            # tiny model); the plain attention path keeps an f32 cache exact to 1e-5.
            ctx_params.flash_attn_type = FLASH_ATTN_DISABLED
        self._ctx = ll.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ValueError(f"llama.cpp could not make a context of {max_slots} x {per_slot} tokens "
                             f"for {self.gguf_path} (out of memory?)")
        self._memory = ll.llama_get_memory(self._ctx)
        self.n_batch = n_batch
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        super().__init__(
            tokenizer,
            eos_ids=frozenset(eos_ids) if eos_ids is not None else eos_ids_of(tokenizer),
            context_length=per_slot,
            max_slots=max_slots,
            batch_window_s=batch_window_s,
            reuse_kv=reuse_kv,
            name=name or str(gguf_path),
            extra={"gguf": str(self.gguf_path), "kv_type": kv_type, "n_threads": threads},
        )
        self._start()

    @classmethod
    def from_pretrained(cls, path: str, *, gguf_type: str = DEFAULT_GGUF_TYPE, **kwargs: Any) -> "LlamaCppBackend":
        """A resolved ``--model`` path, served from :func:`prepare_gguf`'s file."""
        from agent_runtime.models.resolve import adapter_base, is_adapter_dir, load_tokenizer, resolve_model

        gguf_file = prepare_gguf(path, gguf_type)
        tokenizer = load_tokenizer(str(path))
        # An adapter has no generation config of its own: its base's end-of-turn ids apply, as they do
        # for the transformers engine, which reads them from the merged model.
        config_dir = resolve_model(adapter_base(path)) if is_adapter_dir(path) else str(path)
        eos = eos_ids_of(tokenizer, generation_config_eos_ids(config_dir))
        return cls(gguf_file, tokenizer, eos_ids=eos, name=kwargs.pop("name", str(path)), **kwargs)

    # ---- the engine's share of the slot scheduler (worker thread) ---------------------------

    def _truncate_slot(self, slot: int, keep: int) -> None:
        self._ll.llama_memory_seq_rm(self._memory, slot, keep, -1)

    def _forward_rows(self, rows: list[Row]) -> np.ndarray:
        """Every row's tokens in batches of at most ``n_batch``, each with its sequence id; logits
        are requested for each row's last token only and read before the next decode overwrites them."""
        ll, batch = self._ll, self._batch
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        entries = [(r, row.slot, row.start + j, tok, j == len(row.tokens) - 1)
                   for r, row in enumerate(rows) for j, tok in enumerate(row.tokens)]
        for begin in range(0, len(entries), self.n_batch):
            chunk = entries[begin:begin + self.n_batch]
            wanted = []
            for i, (r, seq, pos, tok, last) in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = last
                if last:
                    wanted.append((i, r))
            batch.n_tokens = len(chunk)
            status = ll.llama_decode(self._ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status}")
            for i, r in wanted:
                ptr = ll.llama_get_logits_ith(self._ctx, i)
                out[r] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return out

    def _worker_teardown(self) -> None:
        ll = self._ll
        ll.llama_batch_free(self._batch)
        ll.llama_free(self._ctx)
        ll.llama_model_free(self._model)
        self._ctx = self._model = None

