"""Command-line pieces for ``tapo``: ``tapo index build`` and ``tapo search`` (mounted by ``tapo_cli.app``).

    app.add_typer(index_app, name="index")
    app.command("search")(search_command)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from agent_runtime.search.base import SearchConfigError

index_app = typer.Typer(name="index", help="Build local BM25 search indexes.", no_args_is_help=True)
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@index_app.command("build")
def build_command(
    corpus: Annotated[Path, typer.Argument(help="JSONL corpus: rows {id, title, text} or Search-R1's {id, contents}.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the index to.")],
    stopwords: Annotated[
        str, typer.Option("--stopwords", help="'en' drops English stopwords (as Search-R1's BM25 does); 'none' keeps all.")
    ] = "en",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Index a JSONL corpus for `--search-backend bm25 --search-index DIR`."""
    from agent_runtime.search.bm25 import build_index
    from agent_runtime.search.corpus import CorpusError

    if stopwords not in ("en", "none"):
        _fail(f"--stopwords must be 'en' or 'none', not {stopwords!r}")
    try:
        info = build_index(corpus, out, progress=progress, stopwords=None if stopwords == "none" else stopwords)
    except CorpusError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the index to {out}: {exc}")
    print(f"indexed {info.num_docs} documents into {info.path}")


def search_command(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    index: Annotated[Path, typer.Option("--index", help="An index directory from `tapo index build`.")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many documents.")] = 3,
) -> None:
    """Search a local BM25 index and print the results as the model sees them."""
    from agent_runtime.search.bm25 import Bm25Backend
    from agent_runtime.search.tool import SearchTool

    try:
        backend = Bm25Backend.load(index, engine="numpy")  # one query: not worth numba's 8 s compile
    except SearchConfigError as exc:
        _fail(str(exc))
    output = asyncio.run(SearchTool(backend, top_k=k)(query))
    if not output.ok:
        _fail(output.text.removeprefix("Error: "), code=1)
    print(output.text, end="" if output.text.endswith("\n") else "\n")
