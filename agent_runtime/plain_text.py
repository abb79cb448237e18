"""Encoding text that must stay text: tool output, client messages, anything not written by us.

A tokenizer maps the *string* ``<|im_end|>`` to the end-of-turn id unless told otherwise, so a web page
or a ``print`` that writes it could end the model's turn and open a fake ``user`` turn. Only the
chat template (our own text) may produce special ids; everything else is encoded with
``split_special_tokens=True``, which tokenizes special-token strings as ordinary characters.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

__all__ = ["encode_plain", "special_strings", "render_template_ids"]

# Private-use characters that stand in for special-token strings inside rendered prompts; the
# numbers between them index the escaped strings.
_OPEN, _CLOSE = "\ue000", "\ue001"


def encode_plain(tokenizer: Any, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """Ids of ``text`` in which no special-token string becomes a special id.

    ``add_special_tokens`` still adds what the tokenizer adds around a sequence (a BOS token).
    """
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=True))


def special_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every string the tokenizer would turn into a special id, longest first."""
    strings = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    strings.update(token.content for token in decoder.values() if getattr(token, "special", False))
    return tuple(sorted((s for s in strings if s), key=len, reverse=True))


def _escape(text: str, pattern: re.Pattern[str], escaped: list[str]) -> str:
    def placeholder(match: re.Match[str]) -> str:
        escaped.append(match.group(0))
        return f"{_OPEN}{len(escaped) - 1}{_CLOSE}"

    return pattern.sub(placeholder, text)


def render_template_ids(tokenizer: Any, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any) -> list[int]:
    """Ids of ``messages`` through the chat template, where only the template makes special ids.

    A message without special-token strings (the usual case) is tokenized exactly as
    ``apply_chat_template`` would. Otherwise each such string in a content is swapped for a
    placeholder, the template is rendered as text, and the placeholders are encoded as plain text.
    """
    # The placeholder characters themselves are escaped too, so that a content holding them stays intact.
    # Longest first, so that a special string containing another is matched whole.
    pattern = re.compile("|".join(re.escape(s) for s in (*special_strings(tokenizer), _OPEN, _CLOSE)))
    escaped: list[str] = []
    safe = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            m = {**m, "content": _escape(content, pattern, escaped)}
        safe.append(m)
    if not escaped:
        ids = tokenizer.apply_chat_template(list(messages), tokenize=True, **template_kwargs)
        if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):  # BatchEncoding in transformers 5
            ids = ids["input_ids"]
        return list(ids)
    rendered = tokenizer.apply_chat_template(safe, tokenize=False, **template_kwargs)
    ids: list[int] = []
    for n, piece in enumerate(rendered.split(_OPEN)):
        if n == 0:
            ids += tokenizer.encode(piece, add_special_tokens=False) if piece else []
            continue
        index, _, rest = piece.partition(_CLOSE)
        ids += encode_plain(tokenizer, escaped[int(index)])
        ids += tokenizer.encode(rest, add_special_tokens=False) if rest else []
    return ids
