"""One resolver from ``--model`` to something an engine loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        if not (path / "config.json").exists() and not is_adapter_dir(path):
            raise ValueError(f"--model {model}: neither a model (config.json) nor a LoRA adapter "
                             "(adapter_config.json) in that directory")
        return str(path)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model  # a hub id such as Qwen/Qwen2.5-3B-Instruct
    raise ValueError(f"--model {model}: no such directory, and not a hub id (owner/name)")


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT LoRA adapter directory (what LoRA training checkpoints hold) without a full model."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def load_causal_lm(path: str, *, dtype: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a resolved ``path``; an adapter is loaded onto its base (which goes
    through :func:`resolve_model`, so ``tiny`` and hub ids work) and merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_adapter_dir(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs), tokenizer
    try:
        from peft import PeftConfig, PeftModel
    except ImportError:
        raise ValueError(f"--model {path}: a LoRA adapter needs peft (pip install 'tapo-agents[train]')") from None
    base_name = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base_name:
        raise ValueError(f"--model {path}: the adapter does not name its base model")
    base, tokenizer = load_causal_lm(resolve_model(base_name), dtype=dtype, **kwargs)
    if Path(path, "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return PeftModel.from_pretrained(base, path).merge_and_unload(), tokenizer
