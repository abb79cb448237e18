"""BM25 search benchmark on the pinned synthetic corpus: index build time and query latency.

The corpus (ARCHITECTURE.md, Contracts): a 50,000-word vocabulary drawn Zipf with s=1 (word of rank
r has probability proportional to 1/r), 40-word documents, 4-word queries drawn the same way, no
stopwords (words are ``w0`` … ``w49999``; the index is built with ``stopwords=None``). Everything is
seeded, so a size always gives the same corpus and queries.

Build time is ``build_index`` end to end on the JSONL file (read, tokenize, index, save). Query
latency is ``Bm25Backend.search_sync`` one query at a time (tokenize, score, top-k, read the docs),
after warm-up, for each bm25s engine: ``numpy`` (default) and ``numba`` (when installed; its
one-off JIT compile is reported apart: it happens once per process, at the first size).

    .venv/bin/python benchmarks/search.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent_runtime.search.bm25 import Bm25Backend, build_index

VOCAB_SIZE = 50_000
DOC_WORDS = 40
QUERY_WORDS = 4
CHUNK_DOCS = 100_000  # generate in chunks: 1M x 40 draws at once would hold 320 MB of int64


def zipf_cdf(vocab_size: int = VOCAB_SIZE, s: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, vocab_size + 1) ** s
    return np.cumsum(weights / weights.sum())


def draw_texts(rng: np.random.Generator, cdf: np.ndarray, count: int, words: int) -> list[str]:
    ranks = np.minimum(np.searchsorted(cdf, rng.random((count, words))), len(cdf) - 1)  # inverse-CDF sampling
    return [" ".join(f"w{r}" for r in row) for row in ranks.tolist()]


def write_corpus(path: Path, num_docs: int, seed: int) -> None:
    rng, cdf = np.random.default_rng(seed), zipf_cdf()
    with path.open("w") as f:
        for start in range(0, num_docs, CHUNK_DOCS):
            texts = draw_texts(rng, cdf, min(CHUNK_DOCS, num_docs - start), DOC_WORDS)
            f.writelines(json.dumps({"id": start + i, "title": "", "text": t}) + "\n" for i, t in enumerate(texts))


def make_queries(count: int, seed: int) -> list[str]:
    return draw_texts(np.random.default_rng(seed + 1), zipf_cdf(), count, QUERY_WORDS)


@dataclass
class Row:
    docs: int
    build_s: float
    load_s: float
    engine: str
    compile_s: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


def time_queries(backend: Bm25Backend, queries: list[str], k: int) -> list[float]:
    for query in queries[:20]:  # warm caches and the page cache of the doc store
        backend.search_sync(query, k)
    latencies = []
    for query in queries:
        start = time.perf_counter()
        backend.search_sync(query, k)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def bench_size(num_docs: int, engines: list[str], num_queries: int, k: int, seed: int, work: Path) -> list[Row]:
    corpus, index = work / f"zipf-{num_docs}.jsonl", work / f"index-{num_docs}"
    print(f"[{num_docs:,} docs] generating corpus", flush=True)
    write_corpus(corpus, num_docs, seed)
    print(f"[{num_docs:,} docs] building index", flush=True)
    start = time.perf_counter()
    build_index(corpus, index, progress=False, stopwords=None)
    build_s = time.perf_counter() - start
    corpus.unlink()
    queries = make_queries(num_queries, seed)

    rows = []
    for engine in engines:
        start = time.perf_counter()
        backend = Bm25Backend.load(index, engine=engine)  # type: ignore[arg-type]
        load_s = time.perf_counter() - start
        compile_s = None
        if engine == "numba":
            start = time.perf_counter()
            if not backend.wait_until_fast(timeout=300):
                raise RuntimeError("numba did not compile")
            # Compiled once per process: later sizes reuse it (shown as 0).
            compile_s = time.perf_counter() - start
        print(f"[{num_docs:,} docs] timing {num_queries} queries on {backend.engine}", flush=True)
        ms = time_queries(backend, queries, k)
        q = statistics.quantiles(ms, n=100, method="inclusive")
        rows.append(Row(num_docs, build_s, load_s, engine, compile_s, q[49], q[94], q[98], statistics.fmean(ms)))
    shutil.rmtree(index)
    return rows


def markdown(rows: list[Row], k: int, num_queries: int) -> str:
    lines = [
        "| docs | build (s) | load (s) | engine | JIT compile (s) | p50 (ms) | p95 (ms) | p99 (ms) | mean (ms) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        compile_s = "—" if r.compile_s is None else f"{r.compile_s:.1f}" if r.compile_s >= 0.05 else "0 (reused)"
        lines.append(
            f"| {r.docs:,} | {r.build_s:.1f} | {r.load_s:.2f} | {r.engine} | {compile_s} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.mean_ms:.2f} |"
        )
    lines.append(f"\n{num_queries} queries of {QUERY_WORDS} words, top-{k}, one at a time.")
    return "\n".join(lines)


def available_engines() -> list[str]:
    try:
        import numba  # noqa: F401
    except ImportError:
        return ["numpy"]
    return ["numpy", "numba"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="corpus sizes in documents")
    parser.add_argument("--engines", nargs="+", choices=["numpy", "numba"], default=None, help="default: all installed")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="where corpora and indexes go (default: a temp dir)")
    args = parser.parse_args()

    engines = args.engines or available_engines()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        rows = [row for size in args.sizes for row in bench_size(size, engines, args.queries, args.k, args.seed, Path(work))]
    print()
    print(markdown(rows, args.k, args.queries))


if __name__ == "__main__":
    main()
