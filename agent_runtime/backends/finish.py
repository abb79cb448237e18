"""vLLM's finish reasons mapped onto ours; shared by the in-process and the HTTP vLLM backends.

vLLM reports ``finish_reason`` (``stop``, ``length``, ``abort``, ``error``, ``repetition``) and
``stop_reason``: the matched stop *string*, the matched stop *token id* (ids from
``stop_token_ids``, which include the model's extra ``generation_config`` EOS ids), or ``None``
(the tokenizer's EOS, or any other reason). SGLang sends the same thing as ``matched_stop``.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable

from agent_runtime.backends.base import FinishReason


def map_finish_reason(
    finish_reason: str | None,
    stop_reason: int | str | None,
    last_token: int | None,
    eos_ids: Collection[int],
) -> tuple[FinishReason | None, str | None]:
    """Our ``(finish_reason, stop_str)`` for an engine's ``(finish_reason, stop_reason)``.

    - ``stop`` with a string ``stop_reason``: a stop string, ``("stop", that string)``.
    - ``stop`` otherwise (EOS, or a stop token id): ``"eos"``.
    - ``length``: ``"length"``, except when the last token is an EOS id. vLLM checks the length cap
      before EOS, so an EOS sampled as the very last allowed token reads ``length``; every other
      backend here checks EOS first and calls it ``eos``.
    - anything else (``abort``, ``repetition``, unknown values): ``"abort"``. ``error`` should be
      raised by the caller before it gets here: it means the engine failed, not that it finished.
    """
    if finish_reason is None:
        return None, None
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return "stop", stop_reason
        return "eos", None
    if finish_reason == "length":
        if last_token is not None and last_token in eos_ids:
            return "eos", None
        return "length", None
    return "abort", None


def eos_ids_of(tokenizer: Any, *more: int | Iterable[int] | None) -> frozenset[int]:
    """The ids that end a turn: the tokenizer's EOS plus ``generation_config.eos_token_id`` (``more``).

    The one definition every engine uses. It is TRL's (GRPOTrainer: the model's generation config
    eos ids plus the tokenizer's) and vLLM's (EOS plus the generation config's stop ids), so a turn
    an engine ends is one TRL does not read as truncated. ``config.eos_token_id`` is not consulted:
    generation ignores it when a generation config is present.
    """
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), *more):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def generation_config_eos_ids(path: str) -> list[int]:
    """``eos_token_id`` of the ``generation_config.json`` at ``path`` (empty when there is none).

    Chat models often end turns with an id that is not the tokenizer's EOS (Qwen: ``<|im_end|>``
    and ``<|endoftext|>``); vLLM stops on both.
    """
    try:
        from transformers import GenerationConfig

        value = GenerationConfig.from_pretrained(path).eos_token_id
    except Exception:  # optional metadata: no file, no network, a broken file all mean "none known"
        return []
    if value is None:
        return []
    return [value] if isinstance(value, int) else [int(v) for v in value]
