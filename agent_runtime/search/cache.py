"""Result caches in front of any backend: in memory (``cachetools``), optionally on disk (``diskcache``).

Keys are (backend identity, query, k), so two backends never share entries and a rebuilt BM25 index
(new build id) never serves the old one's results. Only successful searches are cached. Concurrent
identical searches share one backend call: a GRPO group samples one prompt many times, and its
rollouts often issue the same first query at the same moment.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cachetools
import diskcache

from agent_runtime.search.base import Doc, SearchBackend

log = logging.getLogger(__name__)

Key = tuple[str, str, int]


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0  # backend calls


class CachedSearchBackend:
    """A ``SearchBackend`` that answers repeated searches from memory, then disk, then the backend.

    ``identity`` defaults to the backend's own ``identity`` attribute. The disk cache is optional
    (``disk_dir``) and survives restarts; ``disk_ttl`` seconds (None: no expiry) bounds its staleness,
    which matters for web search, not for a fixed local index.
    """

    def __init__(
        self,
        backend: SearchBackend,
        *,
        identity: str | None = None,
        maxsize: int = 4096,
        ttl: float = 3600.0,
        disk_dir: str | Path | None = None,
        disk_ttl: float | None = None,
    ) -> None:
        identity = identity or getattr(backend, "identity", None)
        if not identity:
            raise ValueError("a cached backend needs an identity: pass identity= or give the backend one")
        self.backend = backend
        self.identity: str = identity
        self.stats = CacheStats()
        self._memory: cachetools.TTLCache[Key, tuple[Doc, ...]] = cachetools.TTLCache(maxsize=maxsize, ttl=ttl)
        self._disk = diskcache.Cache(str(disk_dir)) if disk_dir is not None else None
        self._disk_ttl = disk_ttl
        self._inflight: dict[Key, asyncio.Task[tuple[Doc, ...]]] = {}

    async def search(self, query: str, k: int) -> list[Doc]:
        key = (self.identity, query.strip(), k)
        docs = self._memory.get(key)
        if docs is not None:
            self.stats.memory_hits += 1
            return list(docs)
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.get_running_loop().create_task(self._fill(key))
            self._inflight[key] = task
            task.add_done_callback(lambda done, key=key: self._forget(key, done))
        # shield: one caller's timeout must not cancel the search the others are waiting on
        return list(await asyncio.shield(task))

    def _forget(self, key: Key, task: asyncio.Task[tuple[Doc, ...]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark it seen: the waiters (if any are left) report it

    async def _fill(self, key: Key) -> tuple[Doc, ...]:
        docs = await self._disk_get(key) if self._disk is not None else None
        if docs is not None:
            self.stats.disk_hits += 1
        else:
            self.stats.misses += 1
            docs = tuple(await self.backend.search(key[1], key[2]))
            if self._disk is not None:
                await self._disk_set(key, docs)
        self._memory[key] = docs
        return docs

    # diskcache is SQLite underneath: its calls block, so they run in a thread. A broken cache file
    # must not break search: it is logged and the backend answers.
    async def _disk_get(self, key: Key) -> tuple[Doc, ...] | None:
        assert self._disk is not None
        try:
            raw = await asyncio.to_thread(self._disk.get, _disk_key(key))
            return None if raw is None else tuple(Doc(**d) for d in json.loads(raw))
        except Exception:
            log.warning("search disk cache read failed; asking the backend", exc_info=True)
            return None

    async def _disk_set(self, key: Key, docs: tuple[Doc, ...]) -> None:
        assert self._disk is not None
        raw = json.dumps([asdict(d) for d in docs], ensure_ascii=False)  # JSON, not pickle: readable, version-proof
        try:
            await asyncio.to_thread(self._disk.set, _disk_key(key), raw, expire=self._disk_ttl)
        except Exception:
            log.warning("search disk cache write failed", exc_info=True)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()

    async def aclose(self) -> None:
        self.close()
        aclose = getattr(self.backend, "aclose", None)
        if aclose is not None:
            await aclose()


def _disk_key(key: Key) -> str:
    return json.dumps(key, ensure_ascii=False)
