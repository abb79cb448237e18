"""Incremental detokenization: text deltas whose concatenation is exactly ``decode(all ids)``."""

from __future__ import annotations

from typing import Any, Sequence


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """The one decode used everywhere (special tokens dropped, no space clean-up)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Feeds token ids, returns new text as soon as it is complete.

    Decodes a short window (``prefix_offset:``) rather than the whole history, and holds text back
    while it ends in an incomplete UTF-8 sequence (``\\ufffd``). Decoding from a prefix keeps
    tokenizers that strip a leading space (SentencePiece) exact.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, new_ids: Sequence[int]) -> str:
        self.ids.extend(new_ids)
        prefix_text = decode(self.tokenizer, self.ids[self._prefix_offset : self._read_offset])
        full_text = decode(self.tokenizer, self.ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = decode(self.tokenizer, self.ids[self._prefix_offset : self._read_offset])
        full_text = decode(self.tokenizer, self.ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.ids)
        return full_text[len(prefix_text) :]
