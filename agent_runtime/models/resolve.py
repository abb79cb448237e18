"""One resolver from ``--model`` to something an engine loads."""

from __future__ import annotations

from pathlib import Path


def resolve_model(model: str | None) -> str:
    """A local directory, or a hub id left for ``from_pretrained`` to fetch.

    ``None`` is the built-in default: the tiny fixture model (built offline on first use) until the
    demo agent ships.
    """
    if model is None or model == "tiny":
        from agent_runtime.models.tiny import tiny_model_path

        return str(tiny_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--model {model}: expected a Hugging Face model directory")
        if not (path / "config.json").exists():
            raise ValueError(f"--model {model}: no config.json in that directory")
        return str(path)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model  # a hub id such as Qwen/Qwen2.5-3B-Instruct
    raise ValueError(f"--model {model}: no such directory, and not a hub id (owner/name)")
