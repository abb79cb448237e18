"""The ``search`` tool the model calls: a backend's documents formatted as TAPO and Search-R1 show them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agent_runtime.search.base import Doc, SearchBackend, SearchError
from agent_runtime.tools import ToolFailure, ToolOutput

# TAPO's answer when a search finds nothing (its generation loop injects this for an empty result).
NO_RESULTS = "Sorry, I cannot find any relevant information."


def format_docs(docs: Sequence[Doc]) -> str:
    """TAPO's and Search-R1's ``_passages2string``: ``Doc {i}(Title: {title}) {text}`` one per line."""
    return "".join(f"Doc {i}(Title: {doc.title}) {doc.text}\n" for i, doc in enumerate(docs, start=1))


class SearchTool:
    """Implements the ``Tool`` protocol. The model's mistakes (an empty query) come back in-band
    (``ok=False``); a backend that fails or does not answer raises :class:`ToolFailure`, which the
    registry logs, counts and turns into the same kind of in-band error."""

    name = "search"

    def __init__(self, backend: SearchBackend, *, top_k: int = 3, timeout: float | None = 30.0) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.backend = backend
        self.top_k = top_k
        self.timeout = timeout

    async def __call__(self, argument: str) -> ToolOutput:
        query = argument.strip()
        if not query:
            return ToolOutput("Error: search failed: the query is empty.", ok=False)
        try:
            docs = await asyncio.wait_for(self.backend.search(query, self.top_k), self.timeout)
        except asyncio.TimeoutError as exc:
            raise ToolFailure(f"Error: search failed: no answer within {self.timeout:g} s.") from exc
        except SearchError as exc:
            raise ToolFailure(f"Error: search failed: {exc}") from exc
        except Exception as exc:  # a backend bug: the model's bad luck, the operator's to fix
            raise ToolFailure(f"Error: search failed: {type(exc).__name__}: {exc}") from exc
        docs = docs[: self.top_k]
        if not docs:
            return ToolOutput(NO_RESULTS)
        hits = [{"title": d.title, "url": d.url, "score": d.score} for d in docs]
        return ToolOutput(format_docs(docs), hits=hits)
