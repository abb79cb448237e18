"""`tapo export gguf`: our checkpoints as GGUF files that llama.cpp loads, splits text like our
tokenizer, and computes the same distribution from (f32 export, f32 KV cache)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import require_llama_cpp

from agent_runtime.backends.base import SamplingParams

# Everything a tokenizer has to get right at once: words, digits, code with indentation, tags of the
# tool protocol, ChatML markers, accents, CJK, an emoji and runs of spaces and newlines.
MIXED_TEXT = (
    "<|im_start|>user\nWhat is 12345 * 678?<|im_end|>\n<think>Let me compute it: café, naïve, 東京.</think>"
    "<code>\nfor i in range(3):\n    print(i ** 2)  # squares 🙂\n</code>\n\n<response>0\n1\n4</response>"
    "   spaced\ttabs   and 3.14159, 1,000,000 and e-mail@x.org!"
)


def llama_tokenize(gguf_file: Path, text: str) -> list[int]:
    llama_cpp = require_llama_cpp()
    vocab_only = llama_cpp.Llama(model_path=str(gguf_file), vocab_only=True, verbose=False)
    return vocab_only.tokenize(text.encode(), add_bos=False, special=True)


def run_tapo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tapo_cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TAPO_LOG": "warning"})


def teacher_forced(model, ids: list[int], n_prompt: int) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return [float(logprobs[i - 1, ids[i]]) for i in range(n_prompt, len(ids))]


async def llama_greedy(gguf_file: Path, tokenizer, prompt: list[int], max_tokens: int) -> tuple[list[int], list[float]]:
    from agent_runtime.backends.llamacpp_engine import LlamaCppBackend

    engine = LlamaCppBackend(gguf_file, tokenizer, eos_ids=set(), kv_type="f32", max_slots=1, context_length=512)
    ids: list[int] = []
    logprobs: list[float] = []
    try:
        async for chunk in engine.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0)):
            ids += chunk.token_ids
            logprobs += chunk.logprobs or []
    finally:
        await engine.aclose()
    return ids, logprobs


@pytest.fixture(scope="module")
def tiny_f32(tiny_path) -> Path:
    require_llama_cpp()
    from agent_runtime.models.gguf_export import exported_gguf_path

    return exported_gguf_path(str(tiny_path), "f32")


def test_llama_cpp_splits_text_like_our_tokenizer(tiny_f32, tiny_tokenizer):
    want = tiny_tokenizer(MIXED_TEXT, add_special_tokens=False)["input_ids"]
    assert llama_tokenize(tiny_f32, MIXED_TEXT) == want


def test_the_demo_agent_export_keeps_the_base_files_tokenizer_and_chat_template(tmp_path):
    gguf = pytest.importorskip("gguf")
    require_llama_cpp()
    from agent_runtime.models.gguf_export import export_gguf
    from agent_runtime.models.resolve import DEMO_AGENT, gguf_source, load_tokenizer, resolve_model

    out = export_gguf(DEMO_AGENT, tmp_path / "demo-agent.gguf", out_type="q8_0")
    tokenizer = load_tokenizer(resolve_model(DEMO_AGENT))
    assert llama_tokenize(out, MIXED_TEXT) == tokenizer(MIXED_TEXT, add_special_tokens=False)["input_ids"]
    exported = gguf.GGUFReader(out).fields
    base = gguf.GGUFReader(gguf_source("smollm2-135m-instruct")).fields
    assert exported["tokenizer.chat_template"].contents() == base["tokenizer.chat_template"].contents()
    assert exported["tokenizer.ggml.merges"].contents() == base["tokenizer.ggml.merges"].contents()
    assert exported["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0


async def test_f32_export_decodes_the_same_greedy_tokens_as_transformers(tiny_f32, tiny_model, tiny_tokenizer):
    from agent_runtime.prompts import build_prompt_ids
    from agent_runtime.protocol import TAPO

    for question in ("What is 12 * 34?", "Who founded Trosma Works?", "What is 7 + 8?", "Hello"):
        prompt = build_prompt_ids(tiny_tokenizer, TAPO, question)
        got, logprobs = await llama_greedy(tiny_f32, tiny_tokenizer, prompt, max_tokens=24)
        with torch.no_grad():
            want = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        assert got == want, question
        assert logprobs == pytest.approx(teacher_forced(tiny_model, prompt + got, len(prompt)), abs=1e-4)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
async def test_each_architecture_exports_the_distribution_transformers_computes(tmp_path, tiny_tokenizer, architecture):
    """Random untied models with grouped-query attention: Llama's q/k rows are reordered for llama.cpp's
    rope, Qwen2's biases are kept; a wrong layout shows in the very first logprobs."""
    require_llama_cpp()
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from agent_runtime.models.gguf_export import export_gguf

    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    config = config_class(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():  # sharper than the init's near-uniform logits, so that errors show
        model.lm_head.weight.mul_(40)
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    out = export_gguf(str(tmp_path / "model"), tmp_path / "model.gguf", out_type="f32")

    prompt = tiny_tokenizer("What is 12 * 34? <code>print(12 * 34)</code>", add_special_tokens=False)["input_ids"]
    got, logprobs = await llama_greedy(out, tiny_tokenizer, prompt, max_tokens=16)
    want = teacher_forced(model, prompt + got, len(prompt))
    assert min(want) < -0.5  # the distribution is not one-hot: the comparison has something to compare
    assert logprobs == pytest.approx(want, abs=1e-4)


def test_exports_are_cached_per_checkpoint_and_type(tiny_path, tiny_f32, monkeypatch):
    from agent_runtime.models import gguf_export

    before = tiny_f32.stat().st_mtime_ns
    monkeypatch.setattr(gguf_export, "export_gguf", lambda *a, **k: pytest.fail("exported again"))
    assert gguf_export.exported_gguf_path(str(tiny_path), "f32") == tiny_f32
    assert tiny_f32.stat().st_mtime_ns == before


def test_cli_writes_a_q8_0_file_that_serves(tiny_path, tiny_tokenizer, tmp_path):
    require_llama_cpp()
    from agent_runtime.prompts import build_prompt_ids
    from agent_runtime.protocol import TAPO

    out = tmp_path / "tiny-q8_0.gguf"
    proc = run_tapo("export", "gguf", str(tiny_path), "--out", str(out), "--type", "q8_0")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, "What is 12 * 34?")
    ids, logprobs = asyncio.run(llama_greedy(out, tiny_tokenizer, prompt, max_tokens=12))
    assert len(ids) == 12 and all(lp <= 0 for lp in logprobs)
    assert "<code>" in tiny_tokenizer.decode(ids)  # the fixture model still reaches for its tool


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/model", "--out", "x.gguf"], "no such directory"),
        (["tiny", "--out", "x.gguf", "--type", "q4_k"], "--type must be one of f32, f16, q8_0"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path):
    proc = run_tapo("export", "gguf", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_llamacpp_refuses_an_architecture_it_cannot_export(tmp_path, tiny_tokenizer):
    require_llama_cpp()
    from transformers import GPT2Config, GPT2LMHeadModel

    from agent_runtime.backends import make_backend
    from agent_runtime.models.gguf_export import UnsupportedExportError

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedExportError, match="GPT2LMHeadModel is not supported"):
        make_backend(str(tmp_path), "llamacpp")


def test_auto_keeps_transformers_on_cpu_with_llama_cpp_installed(monkeypatch):
    """llama.cpp serves only when asked for: the CPU default stays the engine the demo agent was checked on."""
    require_llama_cpp()
    from agent_runtime import backends

    monkeypatch.setattr(backends, "_cuda_available", lambda: False)
    assert backends.choose_engine("auto", None) == "transformers"
    assert backends.choose_engine("llamacpp", None) == "llamacpp"
