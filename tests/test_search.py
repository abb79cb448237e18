"""Search: BM25 indexes built from JSONL, the HTTP backends against real local servers, caches, the tool, the CLI.

One FastAPI app on 127.0.0.1 (uvicorn in a thread) speaks three APIs: Search-R1's retriever
(``POST /retrieve``, real BM25 over a few passages with bm25s), SearxNG (``GET /searxng/search``) and
Serper (``POST /serper/search``), and counts the requests each path receives.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import bm25s
import pytest
import typer
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel
from typer.testing import CliRunner

from asgi_thread import serve_asgi

from agent_runtime.search import (
    NO_RESULTS,
    CachedSearchBackend,
    Doc,
    SearchConfigError,
    SearchError,
    SearchTool,
    format_docs,
    make_search_backend,
    make_search_tool,
)
from agent_runtime.search.bm25 import Bm25Backend, build_index
from agent_runtime.search.commands import index_app, search_command
from agent_runtime.search.corpus import CorpusError
from agent_runtime.search.retriever import RetrieverBackend
from agent_runtime.search.searxng import SearxngBackend
from agent_runtime.search.serper import SerperBackend
from agent_runtime.tools import Tool, ToolRegistry

# ---- corpora ------------------------------------------------------------------------------------

KNOWN = [
    ("Harbor Bridge", "The Harbor Bridge opened in 1932 after eight years of construction."),
    ("Marie Curie", "Marie Curie won the Nobel Prize in physics and later in chemistry."),
    ("Python (language)", "Python is a programming language created by Guido van Rossum."),
]
FILLER_WORDS = [f"filler{i}" for i in range(300)]


def filler_docs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"Page {i}", " ".join(rng.choices(FILLER_WORDS, k=20))) for i in range(n)]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def title_text_rows(docs: list[tuple[str, str]]) -> list[dict]:
    return [{"id": i, "title": t, "text": x, "url": f"https://example.org/{i}"} for i, (t, x) in enumerate(docs)]


def contents_rows(docs: list[tuple[str, str]]) -> list[dict]:
    # Search-R1's wiki-18 rows quote the title on the first line of contents.
    return [{"id": str(i), "contents": f'"{t}"\n{x}'} for i, (t, x) in enumerate(docs)]


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bm25")
    corpus = write_jsonl(tmp / "corpus.jsonl", title_text_rows(KNOWN + filler_docs(200)))
    build_index(corpus, tmp / "index", progress=False)
    return tmp / "index"


# ---- BM25 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["title_text", "contents"])
async def test_bm25_build_and_query_both_row_shapes(tmp_path, shape):
    docs = filler_docs(100) + KNOWN
    rows = title_text_rows(docs) if shape == "title_text" else contents_rows(docs)
    info = build_index(write_jsonl(tmp_path / "c.jsonl", rows), tmp_path / "idx", progress=False)
    assert info.num_docs == 103
    backend = Bm25Backend.load(tmp_path / "idx", engine="numpy")

    hits = await backend.search("who won the nobel prize in chemistry", 3)
    assert len(hits) == 1  # filler shares no word with the query, and zero-score docs are not results
    top = hits[0]
    if shape == "title_text":
        assert (top.title, top.url) == ("Marie Curie", "https://example.org/101")
    else:  # Search-R1: first line of contents is the title, quotes and all; no url
        assert (top.title, top.url) == ('"Marie Curie"', "")
    assert top.text == KNOWN[1][1]
    assert top.score is not None and top.score > 0

    ranked = await backend.search("bridge programming language", 5)
    assert [d.text for d in ranked] == [KNOWN[2][1], KNOWN[0][1]]  # two query words beat one
    assert ranked[0].score > ranked[1].score


async def test_bm25_queries_without_matches_and_large_k(bm25_index):
    backend = Bm25Backend.load(bm25_index, engine="numpy")
    assert await backend.search("", 3) == []
    assert await backend.search("the of what", 3) == []  # stopwords only: dropped as at index time
    assert await backend.search("xylophone", 3) == []
    assert len(await backend.search("filler1 filler2 filler3", 10_000)) > 3  # k past the corpus size is clamped
    assert await backend.search("harbor", 0) == []


async def test_bm25_searches_run_off_the_event_loop(bm25_index):
    backend = Bm25Backend.load(bm25_index, engine="numpy")
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = backend.search_sync

    def spy(query: str, k: int) -> list[Doc]:
        threads.append(threading.get_ident())
        return original(query, k)

    backend.search_sync = spy  # type: ignore[method-assign]
    results = await asyncio.gather(*(backend.search("harbor bridge", 1) for _ in range(4)))
    assert all(r[0].title == "Harbor Bridge" for r in results)
    assert threads and loop_thread not in threads


def test_auto_keeps_numpy_for_a_small_index_and_compiles_nothing(bm25_index):
    backend = Bm25Backend.load(bm25_index, engine="auto")
    assert backend.engine == "numpy"
    assert not backend.wait_until_fast(timeout=1)  # and it does not switch later
    assert backend.search_sync("harbor bridge 1932", 1)[0].title == "Harbor Bridge"


def test_bm25_numba_engine_takes_over_with_identical_results(bm25_index):
    pytest.importorskip("numba")
    backend = Bm25Backend.load(bm25_index, engine="numba")
    queries = ["harbor bridge 1932", "nobel physics chemistry", "filler7 filler8 filler9 filler10"]
    before = [backend.search_sync(q, 5) for q in queries]  # served by numpy while numba compiles
    assert backend.wait_until_fast(timeout=60), "numba never finished compiling"
    assert backend.engine == "numba"
    after = [backend.search_sync(q, 5) for q in queries]
    # Same scores; the same documents where no two of them tie (the engines break ties differently).
    for old, new in zip(before, after):
        assert [d.score for d in new] == pytest.approx([d.score for d in old], rel=1e-5)
    assert [[d.text for d in r] for r in after[:2]] == [[d.text for d in r] for r in before[:2]]


def test_bm25_load_of_a_directory_that_is_not_an_index(tmp_path):
    with pytest.raises(SearchConfigError, match="not a search index.*tapo index build"):
        Bm25Backend.load(tmp_path)


# ---- malformed corpora -----------------------------------------------------------------------------


def good_row(i: int) -> str:
    return json.dumps({"id": i, "title": f"t{i}", "text": f"text {i}"})


@pytest.mark.parametrize(
    ("bad_line", "bad_row", "message"),
    [
        (3, '{"id": 3, "title": "x", "text": ', "invalid JSON"),
        (5, '{"id": 5, "title": "no text here"}', "missing field 'text'"),
        (2, '{"title": "t", "text": "no id"}', "missing field 'id'"),
        (4, '{"id": 4, "title": "t", "text": 17}', "field 'text' must be a string"),
        (2, '{"id": 2, "contents": ["a", "b"]}', "field 'contents' must be a string"),
        (3, '[1, 2, 3]', "expected a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, bad_row, message):
    lines = [bad_row if n == bad_line else good_row(n) for n in range(1, 7)]
    corpus = write_jsonl(tmp_path / "broken.jsonl", lines)
    with pytest.raises(CorpusError) as info:
        build_index(corpus, tmp_path / "idx", progress=False)
    assert str(info.value).startswith(f"{corpus}:{bad_line}: ")
    assert message in str(info.value)
    exc = info.value  # no chained parse error: one clean line for the CLI
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_empty_or_missing_corpus(tmp_path):
    with pytest.raises(CorpusError, match="no rows"):
        build_index(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]), tmp_path / "idx", progress=False)
    with pytest.raises(CorpusError, match="no such file"):
        build_index(tmp_path / "absent.jsonl", tmp_path / "idx", progress=False)


# ---- a local server speaking Search-R1's, SearxNG's and Serper's APIs ------------------------------------

SERPER_KEY = "test-key-123"


class RetrieveRequest(BaseModel):  # Search-R1's QueryRequest
    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


class FakeSearchServer:
    def __init__(self) -> None:
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.last_headers: dict[str, str] = {}
        self.passages = [f'"{t}"\n{x}' for t, x in KNOWN + filler_docs(20, seed=1)]
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize(self.passages, show_progress=False), show_progress=False)
        self.app = app = FastAPI()

        @app.middleware("http")
        async def count(request: Request, call_next):
            self.requests[request.url.path] += 1
            self.last_headers = dict(request.headers)
            return await call_next(request)

        @app.post("/retrieve")
        def retrieve(req: RetrieveRequest) -> dict:
            results = []
            for query in req.queries:
                ids, scores = self.retriever.retrieve(bm25s.tokenize([query], show_progress=False), k=req.topk or 3, show_progress=False)
                docs = [({"id": str(i), "contents": self.passages[i]}, float(s)) for i, s in zip(ids[0], scores[0])]
                results.append([{"document": d, "score": s} for d, s in docs] if req.return_scores else [d for d, _ in docs])
            return {"result": results}

        @app.post("/broken/retrieve")
        def broken() -> dict:
            raise HTTPException(500, "index not loaded")

        @app.post("/slow/retrieve")
        async def slow() -> dict:
            await asyncio.sleep(2)
            return {"result": [[]]}

        @app.post("/odd/retrieve")
        def odd() -> dict:
            return {"results": []}

        @app.get("/searxng/search")
        def searxng(q: str, format: str = "html") -> dict:
            if format != "json":
                raise HTTPException(403)
            return {
                "query": q,
                "number_of_results": 2,
                "results": [
                    {"title": f"{q} at the Wiki", "url": "https://wiki.example/a", "content": f"All about {q}.", "score": 2.5, "engine": "wikipedia"},
                    {"title": "Second", "url": "https://b.example/", "content": "More.", "score": 1.0},
                    {"title": "Third", "url": "https://c.example/", "content": "Even more.", "score": 0.5},
                ],
            }

        @app.get("/searxng-nojson/search")
        def searxng_nojson() -> dict:
            raise HTTPException(403, "Forbidden")

        @app.post("/serper/search")
        async def serper(request: Request, x_api_key: str = Header(default="")) -> dict:
            if x_api_key != SERPER_KEY:
                raise HTTPException(403, "Unauthorized.")
            body = await request.json()
            organic = [
                {"title": f"Result {i} for {body['q']}", "link": f"https://r{i}.example/", "snippet": f"Snippet {i}.", "position": i}
                for i in range(1, body.get("num", 10) + 1)
            ]
            answer = {"searchParameters": {"q": body["q"], "type": "search"}, "organic": organic}
            if body["q"] == "eiffel tower":
                answer["knowledgeGraph"] = {"title": "Eiffel Tower", "description": "A tower in Paris.", "website": "https://toureiffel.paris/"}
            return answer


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSearchServer]:
    fake = FakeSearchServer()
    with serve_asgi(fake.app, lifespan="off") as url:
        fake.url = url
        yield fake


@pytest.fixture
async def http():
    """``http(Backend, *args)``: an HTTP backend whose client is closed after the test."""
    made = []

    def make(cls, *args, **kwargs):
        made.append(cls(*args, **kwargs))
        return made[-1]

    yield make
    for backend in made:
        await backend.aclose()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ---- HTTP backends --------------------------------------------------------------------------------


async def test_retriever_backend_speaks_search_r1(server, http):
    backend = http(RetrieverBackend, server.url)
    docs = await backend.search("nobel prize chemistry", 2)
    assert len(docs) == 2
    assert docs[0] == Doc('"Marie Curie"', KNOWN[1][1], "", pytest.approx(docs[0].score))
    assert docs[0].score > docs[1].score
    # TAPO's and Search-R1's configs name the endpoint itself; both spellings reach it.
    assert http(RetrieverBackend, f"{server.url}/retrieve/").endpoint == backend.endpoint == f"{server.url}/retrieve"
    await backend.aclose()


async def test_retriever_backend_reports_bad_answers_as_search_errors(server, http):
    with pytest.raises(SearchError, match="HTTP 500.*index not loaded"):
        await http(RetrieverBackend, f"{server.url}/broken").search("q", 3)
    with pytest.raises(SearchError, match="unexpected shape.*'result'"):
        await http(RetrieverBackend, f"{server.url}/odd").search("q", 3)
    with pytest.raises(SearchError, match="unreachable"):
        await http(RetrieverBackend, closed_port_url()).search("q", 3)
    with pytest.raises(SearchError, match="timed out after 0.2 s"):
        await http(RetrieverBackend, f"{server.url}/slow", timeout=0.2).search("q", 3)


def test_http_backend_survives_one_event_loop_per_batch(server):
    # A trainer's rollout function may call asyncio.run once per batch: the client must follow the loop.
    backend = RetrieverBackend(server.url)
    first = asyncio.run(backend.search("harbor bridge", 1))
    second = asyncio.run(backend.search("harbor bridge", 1))
    assert first == second and first[0].title == '"Harbor Bridge"'


async def test_searxng_backend(server, http):
    backend = http(SearxngBackend, f"{server.url}/searxng")
    docs = await backend.search("harbor bridge", 2)
    assert docs == [
        Doc("harbor bridge at the Wiki", "All about harbor bridge.", "https://wiki.example/a", 2.5),
        Doc("Second", "More.", "https://b.example/", 1.0),
    ]
    with pytest.raises(SearchError, match="HTTP 403.*formats: \\[html, json\\]"):
        await http(SearxngBackend, f"{server.url}/searxng-nojson").search("q", 3)


async def test_serper_backend_sends_key_and_reads_organic(server, http):
    backend = http(SerperBackend, SERPER_KEY, base_url=f"{server.url}/serper")
    docs = await backend.search("harbor bridge", 3)
    assert docs == [Doc(f"Result {i} for harbor bridge", f"Snippet {i}.", f"https://r{i}.example/") for i in (1, 2, 3)]
    assert server.last_headers["x-api-key"] == SERPER_KEY
    panel_first = await backend.search("eiffel tower", 2)  # TAPO's Serper client puts the knowledge panel first
    assert [d.title for d in panel_first] == ["Eiffel Tower", "Result 1 for eiffel tower"]
    with pytest.raises(SearchError, match="HTTP 403") as info:
        await http(SerperBackend, "wrong-key", base_url=f"{server.url}/serper").search("q", 3)
    assert "wrong-key" not in str(info.value) and "wrong-key" not in backend.identity


# ---- the tool ---------------------------------------------------------------------------------------


def test_format_matches_tapo_passages2string():
    docs = [Doc("A", "first text"), Doc('"B"', "second\nline")]
    assert format_docs(docs) == 'Doc 1(Title: A) first text\nDoc 2(Title: "B") second\nline\n'


async def test_search_tool_formats_top_k_and_fills_hits(bm25_index):
    tool = SearchTool(Bm25Backend.load(bm25_index, engine="numpy"), top_k=2)
    assert isinstance(tool, Tool) and tool.name == "search"
    out = await tool("  harbor bridge programming language  ")
    assert out.ok
    assert out.text.splitlines() == [f"Doc 1(Title: {KNOWN[0][0]}) {KNOWN[0][1]}", f"Doc 2(Title: {KNOWN[2][0]}) {KNOWN[2][1]}"]
    assert [(h["title"], h["url"]) for h in out.hits] == [("Harbor Bridge", "https://example.org/0"), ("Python (language)", "https://example.org/2")]
    assert all(isinstance(h["score"], float) for h in out.hits)

    nothing = await tool("xylophone")
    assert (nothing.text, nothing.ok, nothing.hits) == (NO_RESULTS, True, [])


class FailingBackend:
    identity = "failing"

    def __init__(self, exc: Exception | None = None, delay: float = 0.0) -> None:
        self.exc, self.delay, self.calls = exc, delay, 0

    async def search(self, query: str, k: int) -> list[Doc]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.exc is not None:
            raise self.exc
        return [Doc("t", "x")]


async def test_search_tool_turns_failures_into_in_band_errors(server, http):
    cases = [
        (SearchTool(http(RetrieverBackend, f"{server.url}/broken")), "Error: search failed: the retriever answered HTTP 500"),
        (SearchTool(http(RetrieverBackend, closed_port_url())), "Error: search failed: the retriever unreachable"),
        (SearchTool(http(RetrieverBackend, f"{server.url}/slow", timeout=0.2)), "Error: search failed: the retriever timed out"),
        (SearchTool(FailingBackend(delay=5), timeout=0.1), "Error: search failed: no answer within 0.1 s"),
        (SearchTool(FailingBackend(RuntimeError("disk on fire"))), "Error: search failed: RuntimeError: disk on fire"),
        (SearchTool(FailingBackend()), "Error: search failed: the query is empty"),
    ]
    for tool, expected in cases:
        registry = ToolRegistry([tool])
        out = (await registry.call("search", "  " if expected.endswith("empty") else "query")).output
        assert not out.ok and out.text.startswith(expected), out.text
        assert out.hits == []
        # a backend that fails is the operator's problem, not the model's: counted as such
        assert registry.infrastructure_failures == (0 if expected.endswith("empty") else 1)


async def test_search_tool_in_a_tool_registry(bm25_index):
    registry = ToolRegistry([SearchTool(Bm25Backend.load(bm25_index, engine="numpy"))])
    result = await registry.call("search", "marie curie", timeout=5)
    assert result.output.ok and result.output.text.startswith("Doc 1(Title: Marie Curie) Marie Curie won")


# ---- caches ---------------------------------------------------------------------------------------


async def test_memory_cache_and_one_call_for_concurrent_identical_searches(server, http):
    cached = CachedSearchBackend(http(RetrieverBackend, server.url))
    before = server.requests["/retrieve"]
    results = await asyncio.gather(*(cached.search("harbor bridge", 2) for _ in range(8)))
    assert all(r == results[0] for r in results) and len(results[0]) == 2
    assert server.requests["/retrieve"] == before + 1
    await cached.search(" harbor bridge ", 2)  # same query
    await cached.search("harbor bridge", 3)  # another k is another entry
    assert server.requests["/retrieve"] == before + 2
    assert (cached.stats.memory_hits, cached.stats.misses) == (1, 2)
    await cached.aclose()


async def test_failures_are_not_cached():
    backend = FailingBackend(SearchError("down"))
    cached = CachedSearchBackend(backend)
    for _ in range(2):
        with pytest.raises(SearchError):
            await cached.search("q", 3)
    assert backend.calls == 2


async def test_disk_cache_survives_recreating_the_backend(server, tmp_path, http):
    before = server.requests["/retrieve"]
    first = CachedSearchBackend(http(RetrieverBackend, server.url), disk_dir=tmp_path / "cache")
    docs = await first.search("marie curie nobel", 3)
    await first.aclose()
    assert server.requests["/retrieve"] == before + 1

    again = CachedSearchBackend(http(RetrieverBackend, server.url), disk_dir=tmp_path / "cache")  # as after a restart
    assert await again.search("marie curie nobel", 3) == docs
    assert server.requests["/retrieve"] == before + 1
    assert (again.stats.disk_hits, again.stats.misses) == (1, 0)

    other = CachedSearchBackend(http(RetrieverBackend, f"{server.url}/"), identity="another", disk_dir=tmp_path / "cache")
    await other.search("marie curie nobel", 3)  # another identity never shares entries
    assert server.requests["/retrieve"] == before + 2
    await again.aclose()
    await other.aclose()


async def test_rebuilt_index_does_not_serve_stale_disk_entries(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", title_text_rows(KNOWN))
    build_index(corpus, tmp_path / "idx", progress=False)
    first = Bm25Backend.load(tmp_path / "idx", engine="numpy")
    build_index(corpus, tmp_path / "idx", progress=False)  # the same contents: the same answers, entries stay
    assert Bm25Backend.load(tmp_path / "idx", engine="numpy").identity == first.identity
    write_jsonl(corpus, title_text_rows(KNOWN[:-1]))
    build_index(corpus, tmp_path / "idx", progress=False)  # other contents: cached entries no longer apply
    assert Bm25Backend.load(tmp_path / "idx", engine="numpy").identity != first.identity


# ---- factory ----------------------------------------------------------------------------------------


async def test_factory_builds_each_kind(server, bm25_index, monkeypatch):
    monkeypatch.setenv("SERPER_API_KEY", SERPER_KEY)
    monkeypatch.setenv("SEARXNG_URL", f"{server.url}/searxng")
    made = {
        "bm25": make_search_backend("bm25", index=str(bm25_index), engine="numpy"),
        "retriever": make_search_backend("retriever", url=server.url),
        "searxng": make_search_backend("searxng"),
        "serper": make_search_backend("serper", url=f"{server.url}/serper"),
    }
    for kind, backend in made.items():
        assert isinstance(backend, CachedSearchBackend) and backend.identity.startswith(f"{kind}:")
        assert len(await backend.search("harbor bridge", 1)) == 1, kind
        await backend.aclose()
    assert not isinstance(make_search_backend("retriever", url=server.url, cache=False), CachedSearchBackend)
    assert make_search_tool("none") is None
    assert isinstance(make_search_tool("retriever", url=server.url, top_k=5), SearchTool)


def test_factory_errors_name_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    monkeypatch.delenv("SEARXNG_URL", raising=False)
    for kind, kwargs, message in [
        ("bm25", {}, "needs --search-index"),
        ("bm25", {"index": str(tmp_path)}, "not a search index"),
        ("retriever", {}, "needs --search-url"),
        ("searxng", {}, "--search-url or SEARXNG_URL"),
        ("serper", {}, "SERPER_API_KEY"),
        ("google", {}, "unknown search backend 'google'"),
    ]:
        with pytest.raises(SearchConfigError, match=message):
            make_search_backend(kind, **kwargs)


# ---- CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()  # mounted as tapo_cli.app mounts them
    app.add_typer(index_app, name="index")
    app.command("search")(search_command)
    return app


def test_cli_build_then_search(cli, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", contents_rows(KNOWN + filler_docs(30)))
    runner = CliRunner()
    built = runner.invoke(cli, ["index", "build", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    assert f"indexed 33 documents into {tmp_path / 'idx'}" in built.stdout

    found = runner.invoke(cli, ["search", "--index", str(tmp_path / "idx"), "guido python language", "-k", "3"])
    assert found.exit_code == 0, found.output
    assert found.stdout == f'Doc 1(Title: "Python (language)") {KNOWN[2][1]}\n'

    none = runner.invoke(cli, ["search", "--index", str(tmp_path / "idx"), "xylophone"])
    assert (none.exit_code, none.stdout) == (0, NO_RESULTS + "\n")


def test_cli_malformed_row_exits_2_with_file_and_line(cli, tmp_path):
    corpus = write_jsonl(tmp_path / "bad.jsonl", [good_row(1), good_row(2), '{"id": 3, "text": oops}', good_row(4)])
    result = CliRunner().invoke(cli, ["index", "build", str(corpus), "--out", str(tmp_path / "idx"), "--no-progress"])
    assert result.exit_code == 2
    assert f"error: {corpus}:3: invalid JSON" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "idx").exists()


def test_cli_search_on_a_missing_index_exits_2(cli, tmp_path):
    result = CliRunner().invoke(cli, ["search", "--index", str(tmp_path / "nowhere"), "q"])
    assert result.exit_code == 2 and "not a search index" in result.stderr
