"""Bounding tool output before it is injected."""

from __future__ import annotations

from typing import Any

from agent_runtime.detok import decode
from agent_runtime.plain_text import encode_plain


def truncate_middle(text: str, tokenizer: Any, max_tokens: int) -> str:
    """``text`` cut to about ``max_tokens`` tokens, marker included, by dropping the middle.

    The head and the tail are what a model needs from long output: what ran, and how it ended
    (a traceback's last line). The marker says how much was dropped. Re-tokenizing the joined
    text can differ from the cut by a token or two at the seams.
    """
    ids = encode_plain(tokenizer, text)
    if len(ids) <= max_tokens:
        return text
    marker = f"\n[... {len(ids)} tokens, middle omitted ...]\n"
    keep = max(0, max_tokens - len(encode_plain(tokenizer, marker)))
    head = keep // 2
    tail = keep - head
    return decode(tokenizer, ids[:head]) + marker + (decode(tokenizer, ids[len(ids) - tail :]) if tail else "")
