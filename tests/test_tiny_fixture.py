"""The tiny test model: built offline, deterministic from its seed, loadable as any HF model."""

from __future__ import annotations

import filecmp
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from agent_runtime.models.tiny import build_tiny_model

MIXED = "Hello <think>x</think>\n<code>print(12 * 34)</code> é 数 🙂 \t tabs"


def test_the_cached_model_loads_offline_as_a_qwen2_chat_model(tiny_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert model.config.model_type == "qwen2"
    assert tokenizer.decode(tokenizer.encode(MIXED, add_special_tokens=False)) == MIXED
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_the_same_seed_builds_the_same_files(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3, train=False)
    b = build_tiny_model(tmp_path / "b", seed=3, train=False)
    c = build_tiny_model(tmp_path / "c", seed=4, train=False)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert filecmp.cmp(a / "tokenizer.json", b / "tokenizer.json", shallow=False)


def test_tapo_tiny_model_command_writes_a_loadable_model(tmp_path):
    out = tmp_path / "tiny"
    proc = subprocess.run([sys.executable, "-m", "agent_runtime.cli", "tiny-model", "--out", str(out), "--no-train"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "qwen2"
