"""GGUF files as plain Hugging Face directories, converted once and cached.

transformers (with the ``gguf`` package) dequantizes a ``.gguf`` file to fp32, but the model it loads
carries a GGUF ``quantization_config``: transformers refuses to train it or ``save_pretrained`` it, and
every load parses the file again (about 25 s for SmolLM2-135M on 2 cores). :func:`convert_gguf` rebuilds
the model from its config without that ``quantization_config``, loads the dequantized weights into it and
writes model, tokenizer (chat template included) and generation config as an ordinary fp32 directory,
which reloads in a fraction of a second and trains like any other. Nothing here is architecture-specific:
whatever transformers can dequantize converts.

:func:`gguf_model_path` caches one conversion per file under ``$TAPO_CACHE_DIR`` (``~/.cache/tapo``),
keyed by :func:`gguf_fingerprint` and :data:`CONVERTER_VERSION`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Iterator

from agent_runtime.models.cache import build_once, cache_dir

log = logging.getLogger(__name__)

# Bump when the conversion changes what it writes: cached conversions are keyed by it.
CONVERTER_VERSION = "gguf-hf-v1"
# Written last into a converted directory: its presence means the conversion finished.
DONE_FILE = "tapo_gguf.json"
# How much of the file's start the fingerprint hashes (the header and most metadata).
FINGERPRINT_BYTES = 1 << 20


def gguf_fingerprint(path: str | Path) -> str:
    """A cheap identity of a file: its size, its mtime and a hash of its first MiB.

    About 1 ms where a full sha256 of a 98 MB file takes 70-120 ms with the file in the page cache
    (more from disk) on every resolve. pip keeps a wheel's file timestamps, so a reinstall of the same
    wheel hits the same cache entry; an edited or replaced file changes the mtime (and, almost always,
    the size). The full sha256 is recorded in the converted directory's :data:`DONE_FILE`.
    """
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def converted_path(gguf_file: str | Path) -> Path:
    """Where :func:`gguf_model_path` keeps the conversion of ``gguf_file`` (it may not exist yet).

    Named by content, not by file name: a renamed or symlinked file finds the same conversion (its
    :data:`DONE_FILE` names the file it was made from).
    """
    return cache_dir() / f"{CONVERTER_VERSION}-{gguf_fingerprint(gguf_file)}"


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silences transformers' warnings and progress bars, and the GGUF dequantization bar (a bare
    ``tqdm`` on stderr that transformers' progress-bar switch does not reach)."""
    if not enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _as_list(value: object) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, *, progress: bool = False) -> Path:
    """Writes ``gguf_file`` dequantized to fp32 as a Hugging Face directory at ``out_dir``; returns it.

    Model (safetensors, no ``quantization_config``), tokenizer with its chat template, and a
    generation config whose ``eos_token_id``/``pad_token_id`` come from the file's tokenizer metadata.
    Writes :data:`DONE_FILE` last. Peak memory is about twice the fp32 model.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_file, out_dir = Path(gguf_file).resolve(), Path(out_dir)
    started = time.perf_counter()
    where, name = str(gguf_file.parent), gguf_file.name
    with _quiet(not progress):
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # what makes transformers refuse to save or train it
        config.dtype = torch.float32
        model_class, state_dict = type(loaded), loaded.state_dict()
        del loaded
        # No pretrained name: the class AutoModelForCausalLM chose is built from ``config`` and filled
        # from ``state_dict`` (no random initialisation, no second parse of the file).
        model = model_class.from_pretrained(None, config=config, state_dict=state_dict, dtype=torch.float32)
        del state_dict

    eos = _as_list(model.generation_config.eos_token_id) or _as_list(config.eos_token_id)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    if pad is None and eos:
        pad = eos[0]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else (eos or None),
        pad_token_id=pad,
    )
    context = getattr(config, "max_position_embeddings", None)
    if context and tokenizer.model_max_length > 1e20:  # a GGUF names no limit: transformers' "none" sentinel
        tokenizer.model_max_length = context
    out_dir.mkdir(parents=True, exist_ok=True)
    with _quiet(not progress):
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    with open(gguf_file, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    stat = gguf_file.stat()
    info = {
        "converter_version": CONVERTER_VERSION,
        "source": str(gguf_file),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "source_sha256": sha256,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "transformers_version": transformers.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / DONE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def gguf_model_path(gguf_file: str | Path, *, progress: bool = False) -> Path:
    """The cached Hugging Face directory converted from ``gguf_file``, converting it on first use.

    Cached under ``$TAPO_CACHE_DIR`` (``~/.cache/tapo``) by :func:`converted_path`; safe when several
    processes ask at once (one converts, the others wait).
    """
    gguf_file = Path(gguf_file).expanduser()
    if not gguf_file.is_file():
        raise ValueError(f"{gguf_file}: no such GGUF file")
    target = converted_path(gguf_file)
    if (target / DONE_FILE).exists():
        return target

    def build(tmp: Path) -> None:
        log.info("converting %s to a Hugging Face directory (once; cached at %s)", gguf_file, target)
        convert_gguf(gguf_file, tmp, progress=progress)

    return build_once(target, DONE_FILE, build)


def gguf_origin(model_dir: str | Path) -> Path | None:
    """The GGUF file a converted directory was made from, while that file is still there and
    unchanged; ``None`` for any other directory. A GGUF engine loads that file rather than a re-export."""
    try:
        info = json.loads((Path(model_dir) / DONE_FILE).read_text())
        source = Path(info["source"])
        stat = source.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (stat.st_size, stat.st_mtime_ns) != (info.get("source_size"), info.get("source_mtime_ns")):
        return None
    return source
