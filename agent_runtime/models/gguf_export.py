"""Our checkpoints as GGUF files that llama.cpp loads (``tapo export gguf``).

:func:`export_gguf` loads a checkpoint with transformers (a LoRA adapter merged onto its base, as
:func:`agent_runtime.models.resolve.load_causal_lm` does), names its tensors with the ``gguf``
package's own tensor-name maps, stores them as f32, f16 or q8_0 (1-D tensors such as norms and
biases stay f32) and writes the hyperparameters llama.cpp reads. Supported: ``LlamaForCausalLM``
(SmolLM2 and the demo agent) and ``Qwen2ForCausalLM`` (the tiny fixture model).

Two layout details llama.cpp expects:

* Llama uses llama.cpp's "normal" rope, which rotates neighbouring pairs of a head's query/key rows,
  where transformers' ``rotate_half`` pairs row ``i`` with row ``i + head_dim / 2``: each head's rows of
  ``q_proj``/``k_proj`` are interleaved (:func:`interleave_rotary_rows`; transformers undoes exactly this
  when it reads a Llama GGUF). Qwen2 runs llama.cpp's "neox" rope, which is ``rotate_half``: as is.
* A model whose output projection is its token embedding (``tie_word_embeddings``) has no
  ``output.weight``; llama.cpp then reuses ``token_embd.weight``.

The tokenizer: where the checkpoint comes from a GGUF file (``smollm2-135m-instruct``, the demo agent on
it), that file's ``tokenizer.*`` metadata (chat template included) is copied as it is, with the
``general.*`` fields that still describe the export. Otherwise the byte-level BPE tokenizer of the
checkpoint is written as llama.cpp's ``gpt2`` vocabulary: tokens, token types, merges, special ids and a
``tokenizer.ggml.pre`` named from the tokenizer's pre-tokenizer (:data:`PRE_TOKENIZERS`). llama.cpp
applies no normalizer: the NFC of Qwen2-style tokenizers is left out, so text that is not already NFC
can tokenize differently there (the runtime hands llama.cpp token ids, not text).

:func:`exported_gguf_path` exports once per checkpoint and type into ``$TAPO_CACHE_DIR``, keyed by
:func:`checkpoint_fingerprint` and :data:`EXPORTER_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runtime.models.cache import build_once, cache_dir

log = logging.getLogger(__name__)

__all__ = [
    "EXPORTER_VERSION", "OUT_TYPES", "UnsupportedExportError", "checkpoint_fingerprint", "export_gguf",
    "exported_gguf_path", "interleave_rotary_rows", "tensor_type_for",
]

# Bump when the export changes what it writes: cached exports are keyed by it.
EXPORTER_VERSION = "gguf-export-v1"
OUT_TYPES = ("f32", "f16", "q8_0")
# Written last into a cached export's directory, next to MODEL_FILE.
DONE_FILE = "tapo_export.json"
MODEL_FILE = "model.gguf"
# Files of a checkpoint directory that its fingerprint covers (weights, configs, tokenizer).
FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".jinja", ".model", ".txt")
# Files up to this size are hashed whole; bigger ones (multi-GB weights) by size, mtime and their first
# and last MiB, as gguf_fingerprint does, so that resolving a cached export stays fast.
FULL_HASH_BYTES = 64 << 20
EDGE_BYTES = 1 << 20


class UnsupportedExportError(ValueError):
    """The checkpoint loads, but its architecture, tokenizer or rope is one this export does not write."""


@dataclass(frozen=True)
class _Arch:
    gguf_arch: Any  # gguf.MODEL_ARCH
    interleave_qk: bool  # llama.cpp's "normal" rope: q/k rows reordered (see interleave_rotary_rows)


def _architectures() -> dict[str, _Arch]:
    import gguf

    return {
        "LlamaForCausalLM": _Arch(gguf.MODEL_ARCH.LLAMA, interleave_qk=True),
        "Qwen2ForCausalLM": _Arch(gguf.MODEL_ARCH.QWEN2, interleave_qk=False),
    }


# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) by what the Hugging Face pre-tokenizer does:
# ("split", REGEX) for a Split on that regex followed by a ByteLevel that applies no regex of its own;
# ("bytelevel",) for a ByteLevel with GPT-2's regex; ("digits", "bytelevel") for single digits split off
# first. llama.cpp's "qwen2", "llama-bpe", "gpt-2" and "smollm" apply these same expressions.
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    ("split", _QWEN2_REGEX): "qwen2",
    ("split", _LLAMA3_REGEX): "llama-bpe",
    ("bytelevel",): "gpt-2",
    ("digits", "bytelevel"): "smollm",
}


# --- tensors ---------------------------------------------------------------------------------------


def interleave_rotary_rows(weight: Any, n_head: int) -> Any:
    """``weight`` (a q/k projection's weight or bias, heads along the first axis) with each head's rows
    reordered from transformers' halves ``[x0 .. x(d/2-1), y0 .. y(d/2-1)]`` to llama.cpp's neighbouring
    pairs ``[x0, y0, x1, y1, ...]`` (``d`` the head dimension). ``n_head`` is the number of heads the
    rows hold: the key/value heads for ``k_proj``."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot split {rows} rows into {n_head} heads of rotary pairs")
    halves = weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
    return halves.swapaxes(1, 2).reshape(weight.shape)


def tensor_type_for(shape: tuple[int, ...], out_type: str) -> Any:
    """The ``gguf.GGMLQuantizationType`` a tensor of ``shape`` (numpy order: rows last) is stored as:
    1-D tensors (norms, biases) in f32; the others in ``out_type``, except q8_0 rows whose length is not
    a multiple of its block (32), which fall back to f16."""
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) < 2 or out_type == "f32":
        return T.F32
    if out_type == "f16":
        return T.F16
    block, _ = gguf.GGML_QUANT_SIZES[T.Q8_0]
    return T.Q8_0 if shape[-1] % block == 0 else T.F16


def _file_type(out_type: str) -> int:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type]


def _check_out_type(out_type: str) -> None:
    if out_type not in OUT_TYPES:
        raise ValueError(f"--type must be one of {', '.join(OUT_TYPES)}, not {out_type!r}")


# --- the checkpoint ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checkpoint:
    name: str  # as given
    path: str  # a local directory: a model, or an adapter
    adapter: bool
    base_path: str | None  # the adapter's base (a local directory), else None
    gguf_file: Path | None  # the GGUF file whose tokenizer metadata the export copies, if any


def _local_dir(path: str, checkpoint: str) -> str:
    """``path`` as a local directory: a hub id (what resolve_model leaves for from_pretrained) is
    fetched into the Hugging Face cache, as from_pretrained would."""
    if Path(path).is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, allow_patterns=[f"*{s}" for s in FINGERPRINT_SUFFIXES])
    except Exception as exc:  # noqa: BLE001 - offline, no such repo, no access: one message
        raise ValueError(f"{checkpoint}: not a local model directory, and fetching {path} from the "
                         f"Hugging Face hub failed: {type(exc).__name__}: {exc}") from None


def _describe(checkpoint: str) -> _Checkpoint:
    from agent_runtime.models.gguf import gguf_origin
    from agent_runtime.models.resolve import adapter_base, is_adapter_dir, resolve_model

    path = _local_dir(resolve_model(checkpoint), checkpoint)
    if not is_adapter_dir(path):
        return _Checkpoint(checkpoint, path, False, None, gguf_origin(path))
    base = _local_dir(resolve_model(adapter_base(path)), checkpoint)
    if is_adapter_dir(base):
        raise ValueError(f"{checkpoint}: its base {base} is itself an adapter; merge that one first")
    # An adapter that ships its own tokenizer is exported with that tokenizer, not its base file's.
    own_tokenizer = Path(path, "tokenizer_config.json").is_file()
    return _Checkpoint(checkpoint, path, True, base, None if own_tokenizer else gguf_origin(base))


def _file_digest(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}:".encode())
    with open(path, "rb") as f:
        if stat.st_size <= FULL_HASH_BYTES:
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest.update(f"{stat.st_mtime_ns}:".encode())
        digest.update(f.read(EDGE_BYTES))
        f.seek(-EDGE_BYTES, os.SEEK_END)
        digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def _dir_digest(path: str | Path) -> str:
    files = sorted(p for p in Path(path).iterdir()
                   if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path}: no model files to export")
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}={_file_digest(file)}\n".encode())
    return digest.hexdigest()


def _model_key(name: str, checkpoint: str) -> str:
    from agent_runtime.models.gguf import gguf_fingerprint, gguf_origin
    from agent_runtime.models.resolve import adapter_base, gguf_source, is_adapter_dir, resolve_model

    source = gguf_source(name)  # a packaged alias or .gguf path: keyed by the file, without converting it
    if source is not None:
        return f"gguf:{gguf_fingerprint(source)}"
    path = _local_dir(resolve_model(name), checkpoint)
    origin = gguf_origin(path)
    if origin is not None:
        return f"gguf:{gguf_fingerprint(origin)}"
    if is_adapter_dir(path):
        return f"adapter:{_dir_digest(path)}+{_model_key(adapter_base(path), checkpoint)}"
    return f"dir:{_dir_digest(path)}"


def checkpoint_fingerprint(checkpoint: str) -> str:
    """An identity of what :func:`export_gguf` would read for ``checkpoint``: the sha256 of a directory's
    weight, config and tokenizer files (files over 64 MiB by size, mtime and their ends); a GGUF file's
    :func:`~agent_runtime.models.gguf.gguf_fingerprint`; for an adapter, its files plus its base's
    identity. Raises ``ValueError`` as :func:`~agent_runtime.models.resolve.resolve_model` does."""
    return hashlib.sha256(_model_key(checkpoint, checkpoint).encode()).hexdigest()[:16]


# --- hyperparameters -------------------------------------------------------------------------------


def _write_hparams(writer: Any, config: Any, n_vocab: int, checkpoint: str) -> None:
    import gguf

    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedExportError(f"{checkpoint}: hidden_act {act!r} is not supported (llama.cpp's llama/qwen2 run silu)")
    if getattr(config, "use_sliding_window", False):
        raise UnsupportedExportError(f"{checkpoint}: sliding-window attention is not supported by this export")
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    if head_dim * n_head != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(n_vocab)
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ValueError(f"{checkpoint}: the config names no rope theta")
    writer.add_rope_freq_base(float(theta))
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type != "default":
        raise UnsupportedExportError(f"{checkpoint}: rope scaling {rope_type!r} is not supported by this export")


# --- tokenizer ---------------------------------------------------------------------------------------


def _pre_tokenizer_name(spec: dict, checkpoint: str) -> str:
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    shape: list[str] = []
    for step in steps:
        kind = step.get("type")
        if kind == "Split" and not step.get("invert") and step.get("behavior") == "Isolated" \
                and "Regex" in (step.get("pattern") or {}):
            shape += ["split", step["pattern"]["Regex"]]
        elif kind == "ByteLevel" and not step.get("add_prefix_space"):
            shape += ["bytelevel"] if step.get("use_regex", True) else ["bytelevel-plain"]
        elif kind == "Digits" and step.get("individual_digits"):
            shape.append("digits")
        else:
            shape.append(json.dumps(step, sort_keys=True))
    # a Split followed by a ByteLevel without regex is the Split's regex alone
    if len(shape) == 3 and shape[0] == "split" and shape[2] == "bytelevel-plain":
        shape = shape[:2]
    name = PRE_TOKENIZERS.get(tuple(shape))
    if name is None:
        raise UnsupportedExportError(f"{checkpoint}: unsupported tokenizer pre-tokenizer {json.dumps(pre)[:200]} "
                         f"(this export knows {', '.join(sorted(set(PRE_TOKENIZERS.values())))})")
    return name


def _encodes_with(tokenizer: Any, token_id: int | None, at_start: bool) -> bool:
    if token_id is None:
        return False
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    if len(full) <= len(plain):
        return False
    return (full[0] if at_start else full[-1]) == token_id


def _write_hf_tokenizer(writer: Any, tokenizer: Any, n_vocab: int, checkpoint: str) -> None:
    """``tokenizer`` (a fast byte-level BPE tokenizer) as llama.cpp's ``gpt2`` vocabulary."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedExportError(f"{checkpoint}: only fast (tokenizers) byte-level BPE tokenizers export, "
                         f"not {type(tokenizer).__name__}")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    decoder = (spec.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        raise UnsupportedExportError(f"{checkpoint}: unsupported tokenizer type (model {model.get('type')}, decoder "
                         f"{decoder}); this export writes byte-level BPE (GPT-2 style) tokenizers only")
    normalizer = (spec.get("normalizer") or {}).get("type")
    if normalizer not in (None, "NFC"):  # llama.cpp applies none; NFC changes no NFC text
        raise UnsupportedExportError(f"{checkpoint}: unsupported tokenizer normalizer {normalizer}")
    pre = _pre_tokenizer_name(spec, checkpoint)

    vocab = tokenizer.get_vocab()
    if len(vocab) > n_vocab or max(vocab.values()) >= n_vocab:
        raise ValueError(f"{checkpoint}: the tokenizer has {len(vocab)} tokens, the model's embedding {n_vocab}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    by_id = {i: t for t, i in vocab.items()}
    for i in range(n_vocab):
        if i not in by_id:  # embedding rows past the tokenizer (padding)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise ValueError(f"{checkpoint}: the tokenizer has no BPE merges")

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(_encodes_with(tokenizer, tokenizer.bos_token_id, at_start=True))
    writer.add_add_eos_token(_encodes_with(tokenizer, tokenizer.eos_token_id, at_start=False))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = [{"name": k, "template": v} for k, v in template.items()]
    if template:
        writer.add_chat_template(template)


# general.* that describe the file rather than the model: set by the writer, never copied.
_GENERAL_OWN = {"general.architecture", "general.type", "general.file_type", "general.quantization_version",
                "general.alignment"}
# What still holds of a base model's general.* for a fine-tune of it.
_GENERAL_KEPT_FOR_FINETUNE = {"general.basename", "general.size_label", "general.license",
                              "general.license.name", "general.license.link", "general.languages",
                              "general.tags"}


def _copy_field(writer: Any, field: Any) -> bool:
    import gguf

    types = field.types
    if not types or (types[0] == gguf.GGUFValueType.ARRAY and len(types) != 2):
        return False  # nested arrays: nothing llama.cpp reads for these models
    sub = types[1] if types[0] == gguf.GGUFValueType.ARRAY else None
    writer.add_key_value(field.name, field.contents(), types[0], sub_type=sub)
    return True


def _write_gguf_tokenizer(writer: Any, gguf_file: Path, n_vocab: int, ck: _Checkpoint) -> None:
    """Copies ``tokenizer.*`` (vocabulary, merges, special ids, chat template) and the ``general.*``
    that still hold from the GGUF file the checkpoint was converted from."""
    import gguf

    reader = gguf.GGUFReader(gguf_file)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ValueError(f"{ck.name}: {gguf_file} holds no tokenizer")
    if len(tokens.data) != n_vocab:
        raise ValueError(f"{ck.name}: {gguf_file} has {len(tokens.data)} tokens, the model's embedding {n_vocab}")
    general: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            _copy_field(writer, field)
        elif key.startswith("general.") and key not in _GENERAL_OWN:
            general[key] = field
    for key, field in general.items():
        if not ck.adapter or key in _GENERAL_KEPT_FOR_FINETUNE:
            _copy_field(writer, field)
    if ck.adapter:
        writer.add_name(_display_name(ck))
        writer.add_base_model_count(1)
        for key, add in (("general.name", writer.add_base_model_name),
                         ("general.organization", writer.add_base_model_organization)):
            if key in general:
                add(0, general[key].contents())


def _display_name(ck: _Checkpoint) -> str:
    return ck.name if not Path(ck.name).expanduser().exists() else Path(ck.path).resolve().name


# --- the export --------------------------------------------------------------------------------------


def _load(ck: _Checkpoint) -> tuple[Any, Any]:
    import torch

    from agent_runtime.models.gguf import _quiet
    from agent_runtime.models.resolve import load_causal_lm

    with _quiet(not log.isEnabledFor(logging.DEBUG)):
        model, tokenizer = load_causal_lm(ck.path, dtype=torch.float32)
    return model.eval(), tokenizer


def _tensors(model: Any, arch: _Arch, out_type: str, checkpoint: str):
    """``(gguf name, numpy data, ggml type)`` of every tensor the GGUF file holds."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    names = gguf.get_tensor_name_map(arch.gguf_arch, config.num_hidden_layers)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = bool(getattr(config, "tie_word_embeddings", False)) or (
        head is not None and head.weight.data_ptr() == embed.weight.data_ptr())
    head_names = {f"{n}.weight" for n, m in model.named_modules(remove_duplicate=False) if head is not None and m is head}
    with torch.no_grad():
        for hf_name, tensor in model.state_dict().items():
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            if tied and hf_name in head_names:
                continue  # llama.cpp reuses token_embd.weight
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"{checkpoint}: no GGUF tensor for {hf_name} in {arch.gguf_arch.name.lower()}")
            data = tensor.detach().to(torch.float32).cpu().numpy()
            if arch.interleave_qk and (".attn_q." in name or ".attn_k." in name):
                data = interleave_rotary_rows(data, n_head if ".attn_q." in name else n_kv)
            qtype = tensor_type_for(data.shape, out_type)
            yield name, np.ascontiguousarray(gguf.quants.quantize(data, qtype)), qtype


def export_gguf(checkpoint: str, out: str | Path, *, out_type: str = "f16") -> Path:
    """Writes ``checkpoint`` as a GGUF file at ``out`` (a temporary file beside it, renamed into place
    when complete); returns ``out``.

    ``checkpoint`` is anything :func:`~agent_runtime.models.resolve.resolve_model` accepts (an adapter is
    merged onto its base). ``out_type``: ``f32``, ``f16`` or ``q8_0``. Raises ``ValueError`` for a
    checkpoint that does not resolve, an unsupported architecture or tokenizer, or a bad ``out_type``.
    """
    import gguf

    _check_out_type(out_type)
    out = Path(out).expanduser()
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; name the .gguf file to write")
    started = time.perf_counter()
    ck = _describe(checkpoint)
    model, tokenizer = _load(ck)
    class_name = type(model).__name__
    arch = _architectures().get(class_name)
    if arch is None:
        raise UnsupportedExportError(f"{checkpoint}: architecture {class_name} is not supported "
                         f"(this export writes {', '.join(_architectures())})")
    n_vocab = model.get_input_embeddings().weight.shape[0]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        if ck.gguf_file is not None:
            _write_gguf_tokenizer(writer, ck.gguf_file, n_vocab, ck)
        else:
            writer.add_name(_display_name(ck))
            _write_hf_tokenizer(writer, tokenizer, n_vocab, checkpoint)
        _write_hparams(writer, model.config, n_vocab, checkpoint)
        writer.add_file_type(_file_type(out_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name, data, qtype in _tensors(model, arch, out_type, checkpoint):
            writer.add_tensor(name, data, raw_dtype=qtype)
        del model
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported %s to %s (%s, %.1f MB) in %.1f s", checkpoint, out, out_type,
             out.stat().st_size / 1e6, time.perf_counter() - started)
    return out


def exported_gguf_path(checkpoint: str, out_type: str) -> Path:
    """The GGUF export of ``checkpoint`` at ``out_type``, exported on first use and cached under
    ``$TAPO_CACHE_DIR`` (``~/.cache/tapo``), keyed by :func:`checkpoint_fingerprint` and
    :data:`EXPORTER_VERSION`; safe when several processes ask at once (one exports, the others wait)."""
    _check_out_type(out_type)
    fingerprint = checkpoint_fingerprint(checkpoint)
    target = cache_dir() / f"{EXPORTER_VERSION}-{fingerprint}-{out_type}"

    def build(tmp: Path) -> None:
        log.info("exporting %s to GGUF %s (once; cached at %s)", checkpoint, out_type, target)
        started = time.perf_counter()
        export_gguf(checkpoint, tmp / MODEL_FILE, out_type=out_type)
        info = {"exporter_version": EXPORTER_VERSION, "checkpoint": checkpoint, "fingerprint": fingerprint,
                "out_type": out_type, "bytes": (tmp / MODEL_FILE).stat().st_size,
                "seconds": round(time.perf_counter() - started, 1)}
        (tmp / DONE_FILE).write_text(json.dumps(info, indent=2) + "\n")

    return build_once(target, DONE_FILE, build) / MODEL_FILE
