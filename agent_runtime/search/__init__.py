"""Search for the agent's ``<search>`` tool: backends (local BM25, Search-R1's retriever, SearxNG,
Serper), caches in front of them, and the ``SearchTool`` that formats results as TAPO does.

``build_index``, ``Bm25Backend`` and ``CorpusError`` load lazily: importing bm25s takes 0.3 s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent_runtime.search.base import Doc, SearchBackend, SearchConfigError, SearchError
from agent_runtime.search.cache import CachedSearchBackend
from agent_runtime.search.factory import BACKEND_KINDS, make_search_backend, make_search_tool
from agent_runtime.search.tool import NO_RESULTS, SearchTool, format_docs

if TYPE_CHECKING:
    from agent_runtime.search.bm25 import Bm25Backend, build_index
    from agent_runtime.search.corpus import CorpusError

__all__ = [
    "BACKEND_KINDS",
    "Bm25Backend",
    "CachedSearchBackend",
    "CorpusError",
    "Doc",
    "NO_RESULTS",
    "SearchBackend",
    "SearchConfigError",
    "SearchError",
    "SearchTool",
    "build_index",
    "format_docs",
    "make_search_backend",
    "make_search_tool",
]

_LAZY = {"Bm25Backend": "bm25", "build_index": "bm25", "CorpusError": "corpus"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"agent_runtime.search.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
