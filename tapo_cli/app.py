"""The ``tapo`` command: the typer app, its global options, the small commands, and the others mounted
in the order ``tapo --help`` lists them."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent_runtime import __version__
from tapo_cli.chat import chat
from tapo_cli.eval import eval_command
from tapo_cli.export import export_app
from tapo_cli.options import fail
from tapo_cli.run import run
from tapo_cli.serve import serve

app = typer.Typer(
    name="tapo",
    help="Train and serve tool-using reasoning agents: one reasoning-search-code loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    if not verbose:  # quiet by default: no weight-loading bars or library chatter
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and the training data.")] = 0,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Fit it on fixture trajectories.")] = True,
) -> None:
    """Build the tiny Qwen2-architecture test model and its tokenizer, offline and deterministically."""
    from agent_runtime.models.tiny import build_tiny_model

    path = build_tiny_model(out, seed=seed, train=train, progress=True)
    print(path)


app.command()(run)
app.command()(serve)
app.command("demo", help="Serve the API and a chat page at / that talks to it (one process, one port).")(serve)
app.command("eval")(eval_command)
app.command()(chat)
app.add_typer(export_app, name="export")


@app.command("exec")
def exec_code(
    code: Annotated[Optional[str], typer.Option("--code", help="Python to run; read from stdin when omitted.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Wall-clock seconds.")] = 10.0,
) -> None:
    """Run Python once in the code tool's sandbox and print one JSON object (ok, output, seconds)."""
    from agent_runtime.sandbox import SandboxUnavailableError, exec_once

    source = code if code is not None else sys.stdin.read()
    try:
        result = exec_once(source, timeout=timeout)
    except SandboxUnavailableError as exc:
        fail(str(exc))
    print(json.dumps(result))


def _mount_search_commands() -> None:
    from agent_runtime.search.commands import index_app, search_command

    app.add_typer(index_app, name="index")
    app.command("search")(search_command)


_mount_search_commands()
