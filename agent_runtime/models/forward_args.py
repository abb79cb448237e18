"""Keyword arguments of a Hugging Face model's ``forward`` that changed name across transformers versions."""

from __future__ import annotations

import inspect
from typing import Any, Callable


def cache_keyword(forward: Callable[..., Any]) -> str:
    """The name ``forward`` takes its KV cache by: transformers 5.2x renamed ``past_key_values`` to
    ``cache``, and the old name warns on every call (a FutureWarning per request in a server log)."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
