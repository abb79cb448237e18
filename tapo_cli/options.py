"""What the commands share: the options of ``run``, ``serve``, ``demo`` and ``eval`` (ARCHITECTURE.md,
Contracts), the error console and the error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="HF directory, LoRA adapter, .gguf file, hub id, or an alias (demo-agent, tiny, tiny-functions, "
                    "smollm2-135m-instruct); default: demo-agent.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="auto, transformers, llamacpp (GGUF on CPU; the [llamacpp] extra), vllm or remote.")]
EngineUrlOpt = Annotated[Optional[str], typer.Option("--engine-url", help="OpenAI-compatible server for --engine remote.")]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help="tapo, search-r1, torl or hermes (function calling through the chat template).")]
MaxToolCallsOpt = Annotated[int, typer.Option("--max-tool-calls", min=0, help="Tool calls before the final turn.")]
SearchBackendOpt = Annotated[str, typer.Option("--search-backend", help="bm25, retriever, searxng, serper or none.")]
SearchIndexOpt = Annotated[Optional[Path], typer.Option(
    "--search-index", help="Index from `tapo index build` (bm25); default: the demo encyclopedia.")]
SearchUrlOpt = Annotated[Optional[str], typer.Option("--search-url", help="Retriever or SearxNG base URL.")]


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    # escape: messages hold paths and "[split]"-like text that rich would read as markup;
    # soft_wrap: one line however long (rich wraps at 80 columns off a terminal).
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
