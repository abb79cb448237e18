"""Local BM25 search with ``bm25s``: build an index directory from a JSONL corpus, load it, query it.

An index directory holds bm25s's own files (score matrix, vocabulary, params), the documents as
bm25s's ``corpus.jsonl`` (read back through its mmap-indexed ``JsonlCorpus``, so loading 1M docs is
instant), and ``tapo_search.json`` with our settings. Searching needs only the directory.

Tokenization is bm25s's (lowercase, ``\\w\\w+`` words) with English stopwords removed by default:
Search-R1's BM25 index (pyserini/Lucene) drops English stopwords too, and a question's "the", "of"
and "what" otherwise dominate short queries. No stemming (it would need PyStemmer, a C extension).
The setting is stored in the index so queries are tokenized as the documents were; pass
``stopwords=None`` for corpora that are not English (the pinned benchmark corpus is built that way).

Retrieval engine: bm25s's numba backend is several times faster at 1M docs (p50 3.3 ms vs 11.8 ms,
p95 8.6 vs 57 ms here) but JIT-compiles for about 8 s on first use in each process (18 CPU-seconds
on 2 cores, taken from the model loading beside it). ``engine="auto"`` therefore keeps numpy for
indexes under ``NUMBA_MIN_DOCS`` documents (numpy's median query at 100k: 0.82 ms); on larger ones
it serves queries with numpy while numba compiles in a background thread, then switches. One-shot
uses (the CLI) pass ``engine="numpy"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bm25s
from bm25s.utils.corpus import JsonlCorpus

from agent_runtime.search.base import Doc, SearchConfigError
from agent_runtime.search.corpus import CorpusError, read_corpus

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG on import; its build messages would leak into every CLI.
logging.getLogger("bm25s").setLevel(logging.WARNING)

META_FILE = "tapo_search.json"
DOCS_FILE = "corpus.jsonl"  # bm25s's default corpus file name
INDEX_FORMAT = 1

Engine = Literal["auto", "numpy", "numba"]
NUMBA_MIN_DOCS = 100_000  # auto: below this, numpy answers in under a millisecond and nothing compiles

# BM25 scoring is CPU-bound: more threads than cores only queue; a pool of our own keeps queries from
# starving (or being starved by) other users of asyncio's default executor.
_QUERY_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="bm25")


@dataclass(frozen=True)
class IndexInfo:
    path: Path
    num_docs: int
    stopwords: str | None
    build_id: str


def build_index(
    corpus_path: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    *,
    stopwords: str | None = "en",
) -> IndexInfo:
    """Index a JSONL corpus into ``out_dir``. A malformed row raises ``CorpusError`` naming file and line.

    The title is indexed together with the text, as Search-R1's indexes do with ``contents``.
    """
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    if not corpus_path.is_file():
        raise CorpusError(f"{corpus_path}: no such file")
    rows = list(read_corpus(corpus_path, progress=progress))
    if not rows:
        raise CorpusError(f"{corpus_path}: the corpus has no rows")

    tokens = bm25s.tokenize(
        [f"{row.title}\n{row.text}" for row in rows], stopwords=stopwords, show_progress=progress
    )
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=progress)
    del tokens

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)  # the directory is not loadable until the save completes
    retriever.save(out_dir, corpus=(row.to_json() for row in rows), show_progress=progress)
    # The contents' hash: caches keyed by it stay valid across identical rebuilds (a committed index
    # does not change when regenerated), and change with the contents.
    digest = hashlib.sha256(json.dumps([stopwords, [row.to_json() for row in rows]], sort_keys=True).encode())
    info = IndexInfo(out_dir, len(rows), stopwords, digest.hexdigest()[:32])
    meta = {"format": INDEX_FORMAT, "num_docs": info.num_docs, "stopwords": stopwords, "build_id": info.build_id}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return info


def read_index_info(index_dir: str | Path) -> IndexInfo:
    path = Path(index_dir)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise SearchConfigError(
            f"{path} is not a search index (no {META_FILE}); build one with `tapo index build CORPUS.jsonl --out {path}`"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise SearchConfigError(f"{path}: index format {meta.get('format')!r} is not {INDEX_FORMAT}; rebuild it")
    return IndexInfo(path, int(meta["num_docs"]), meta["stopwords"], str(meta["build_id"]))


class Bm25Backend:
    """Queries a built index. ``search`` runs in a thread pool so the event loop never blocks."""

    def __init__(self, info: IndexInfo, retriever: bm25s.BM25, docs: JsonlCorpus, engine: Engine = "auto") -> None:
        self.info = info
        self.identity = f"bm25:{info.path.resolve()}#{info.build_id}"
        self._retriever = retriever
        self._docs = docs
        self._docs_lock = threading.Lock()  # JsonlCorpus seeks one shared mmap: not thread-safe
        self.fast = threading.Event()  # set once the numba engine is compiled and in use
        if _resolve_engine(engine, info.num_docs) == "numba":
            threading.Thread(target=self._switch_to_numba, name="bm25-numba-warmup", daemon=True).start()

    @classmethod
    def load(cls, index_dir: str | Path, *, engine: Engine = "auto") -> Bm25Backend:
        info = read_index_info(index_dir)
        # Always load as numpy: numba is switched on only once it is compiled (see _switch_to_numba).
        retriever = bm25s.BM25.load(info.path, backend="numpy", show_progress=False)
        docs = JsonlCorpus(info.path / DOCS_FILE, show_progress=False, verbosity=0)
        return cls(info, retriever, docs, engine)

    @property
    def engine(self) -> str:
        return self._retriever.backend

    async def search(self, query: str, k: int) -> list[Doc]:
        return await asyncio.get_running_loop().run_in_executor(_QUERY_POOL, self.search_sync, query, k)

    def search_sync(self, query: str, k: int) -> list[Doc]:
        k = min(k, self.info.num_docs)
        if k <= 0:
            return []
        tokens = bm25s.tokenize(query, stopwords=self.info.stopwords, return_ids=False, show_progress=False)[0]
        vocab = self._retriever.vocab_dict
        known = [t for t in tokens if t and t in vocab]
        if not known:  # only stopwords or unseen words: no document can score (and bm25s rejects it)
            return []
        ids, scores = self._retriever.retrieve([known], k=k, show_progress=False)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]  # score 0: no query word matched
        with self._docs_lock:
            rows = [self._docs[i] for i, _ in hits]
        return [Doc(row["title"], row["text"], row.get("url", ""), score) for row, (_, score) in zip(rows, hits)]

    def wait_until_fast(self, timeout: float | None = None) -> bool:
        """Block until the numba engine is in use (False on timeout or when it never will be)."""
        return self.fast.wait(timeout)

    def _switch_to_numba(self) -> None:
        try:
            _compile_numba()
        except Exception:  # numba is an optimisation: keep serving with numpy
            log.warning("bm25s numba engine failed to compile; staying on numpy", exc_info=True)
            return
        # retrieve() picks its engine from this attribute on every call, so switching is safe mid-flight.
        self._retriever.backend = "numba"
        self.fast.set()


def _resolve_engine(engine: Engine, num_docs: int) -> str:
    if engine not in ("auto", "numpy", "numba"):
        raise SearchConfigError(f"unknown BM25 engine {engine!r}: use auto, numpy or numba")
    if engine == "numpy" or (engine == "auto" and num_docs < NUMBA_MIN_DOCS):
        return "numpy"
    try:
        import numba  # noqa: F401
    except ImportError:
        if engine == "numba":
            raise SearchConfigError("the numba BM25 engine needs `pip install numba`") from None
        return "numpy"
    return "numba"


_compile_lock = threading.Lock()
_compiled = False


def _compile_numba() -> None:
    """Compile bm25s's numba retrieval once per process by querying a two-document index.

    The compiled code is shared by every index of the same dtypes (bm25s's defaults, used here).
    """
    global _compiled
    with _compile_lock:
        if _compiled:
            return
        warm = bm25s.BM25(backend="numba")
        warm.index(bm25s.tokenize(["warm up", "numba engine"], stopwords=None, show_progress=False), show_progress=False)
        warm.retrieve([["warm"]], k=1, show_progress=False)
        _compiled = True
