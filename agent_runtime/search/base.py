"""What every search backend returns and promises: ``search(query, k) -> list[Doc]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Doc:
    """One search result. ``url`` is empty for local corpora; ``score`` is None where the source gives none."""

    title: str
    text: str
    url: str = ""
    score: float | None = None


@runtime_checkable
class SearchBackend(Protocol):
    """A source of documents. Failures raise (the ``SearchTool`` turns them into in-band errors).

    Backends shipped here also carry an ``identity`` string (kind plus location) that caches key on.
    """

    async def search(self, query: str, k: int) -> list[Doc]: ...


class SearchError(RuntimeError):
    """A backend answered, but not usefully: a bad status, a malformed body, a refused request."""


def split_contents(contents: str) -> tuple[str, str]:
    """Search-R1's ``contents`` field: the first line is the title, the rest the text.

    Done exactly as Search-R1's and TAPO's ``_passages2string`` do (no quote stripping), so that
    served models see the passages in the shape they were trained on.
    """
    title, _, text = contents.partition("\n")
    return title, text


class SearchConfigError(ValueError):
    """A backend cannot be set up: a missing index, URL or API key, or an unknown kind."""
