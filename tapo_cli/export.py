"""``tapo export``: our checkpoints in other formats (``tapo export gguf``: for llama.cpp and Ollama)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapo_cli.options import fail

export_app = typer.Typer(name="export", help="Write checkpoints in other formats.", no_args_is_help=True)


@export_app.command("gguf")
def export_gguf_command(
    checkpoint: Annotated[str, typer.Argument(
        help="HF directory, base plus LoRA adapter (merged), .gguf file, hub id, or an alias (demo-agent, tiny).")],
    out: Annotated[Path, typer.Option("--out", help="The .gguf file to write.")],
    out_type: Annotated[str, typer.Option("--type", help="f32, f16 or q8_0 (norms and biases stay f32).")] = "f16",
) -> None:
    """Write a checkpoint as one GGUF file, tokenizer and chat template included; print its path."""
    from agent_runtime.models.gguf_export import export_gguf

    try:
        path = export_gguf(checkpoint, out, out_type=out_type)
    except (ValueError, OSError) as exc:  # a bad checkpoint, type or path: one line, no traceback
        fail(str(exc))
    print(path)
