"""One place that turns ``--search-backend``/``--search-index``/``--search-url`` into a backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from agent_runtime.search.base import SearchBackend, SearchConfigError
from agent_runtime.search.cache import CachedSearchBackend
from agent_runtime.search.http_client import DEFAULT_TIMEOUT_S
from agent_runtime.search.retriever import RetrieverBackend
from agent_runtime.search.searxng import SearxngBackend
from agent_runtime.search.serper import SERPER_URL, SerperBackend
from agent_runtime.search.tool import SearchTool

if TYPE_CHECKING:
    from agent_runtime.search.bm25 import Engine

BACKEND_KINDS = ("bm25", "retriever", "searxng", "serper")


def make_search_backend(
    kind: str,
    *,
    index: str | Path | None = None,
    url: str | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    engine: Engine = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> SearchBackend:
    """A backend of ``kind`` (one of ``BACKEND_KINDS``), behind an in-memory cache unless ``cache=False``.

    ``cache_dir`` adds the on-disk cache that survives restarts. ``url`` falls back to ``SEARXNG_URL``
    for searxng; for serper it overrides Serper's address (tests, proxies) and the key comes from
    ``SERPER_API_KEY``. ``engine`` picks the bm25s engine (see ``bm25``). Raises ``SearchConfigError``.
    """
    backend: SearchBackend
    if kind == "bm25":
        if not index:
            raise SearchConfigError(
                "the bm25 search backend needs --search-index DIR (build one with `tapo index build CORPUS.jsonl --out DIR`)"
            )
        from agent_runtime.search.bm25 import Bm25Backend  # bm25s (and numba) take 0.3 s to import

        backend = Bm25Backend.load(index, engine=engine)
    elif kind == "retriever":
        if not url:
            raise SearchConfigError(
                "the retriever search backend needs --search-url, the address of a Search-R1 retrieval server "
                "(e.g. http://127.0.0.1:8000/retrieve)"
            )
        backend = RetrieverBackend(url, timeout=timeout)
    elif kind == "searxng":
        url = url or os.environ.get("SEARXNG_URL")
        if not url:
            raise SearchConfigError("the searxng search backend needs --search-url or SEARXNG_URL (e.g. http://127.0.0.1:8888)")
        backend = SearxngBackend(url, timeout=timeout)
    elif kind == "serper":
        key = os.environ.get("SERPER_API_KEY")
        if not key:
            raise SearchConfigError("the serper search backend needs an API key in the environment variable SERPER_API_KEY")
        backend = SerperBackend(key, base_url=url or SERPER_URL, timeout=timeout)
    else:
        raise SearchConfigError(f"unknown search backend {kind!r}: choose one of {', '.join(BACKEND_KINDS)} (or none)")
    if cache or cache_dir is not None:
        backend = CachedSearchBackend(backend, disk_dir=cache_dir)
    return backend


def make_search_tool(
    kind: str,
    *,
    index: str | Path | None = None,
    url: str | None = None,
    top_k: int = 3,
    cache_dir: str | Path | None = None,
    engine: Engine = "auto",
) -> SearchTool | None:
    """The ``search`` tool for ``--search-backend``; None for ``none`` (the agent then has no search tool)."""
    if kind == "none":
        return None
    return SearchTool(make_search_backend(kind, index=index, url=url, cache_dir=cache_dir, engine=engine), top_k=top_k)
