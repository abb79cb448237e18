"""The tiny test model: built offline, deterministic from its seed, loadable as any HF model."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from agent_runtime.models import tiny
from agent_runtime.models.fixture_tasks import (
    FixtureTask,
    fixture_search,
    fixture_tasks,
    run_python,
    trajectory_text,
)
from agent_runtime.models.tiny import build_tiny_model
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO

MIXED = "Hello <think>x</think>\n<code>print(12 * 34)</code> é 数 🙂 \t tabs"


def test_the_cached_model_loads_offline_as_a_qwen2_chat_model(tiny_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert model.config.model_type == "qwen2"
    assert tokenizer.decode(tokenizer.encode(MIXED, add_special_tokens=False)) == MIXED
    # the reloaded tokenizer encodes exactly like the one the model was trained with
    assert tokenizer.encode(MIXED) == tiny.build_tokenizer(seed=0).encode(MIXED)
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
    proc = subprocess.run([sys.executable, "-m", "tapo_cli", "tiny-model", "--out", str(out), "--no-train"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "qwen2"


def test_cache_builds_once_under_concurrent_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPO_CACHE_DIR", str(tmp_path))
    builds: list[Path] = []

    def fake_build(out_dir: Path, seed: int = 0, train: bool = True, progress: bool = False) -> Path:
        builds.append(out_dir)
        time.sleep(0.2)  # long enough for the other callers to queue on the lock
        (out_dir / tiny.FIXTURE_FILE).write_text("{}")
        return out_dir

    monkeypatch.setattr(tiny, "build_tiny_model", fake_build)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(tiny.tiny_model_path(seed=5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len(set(results)) == 1 and (results[0] / tiny.FIXTURE_FILE).exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [results[0].name]  # no temp dir left


def test_fixture_tools_match_the_trajectories() -> None:
    assert run_python("print(23 * 47)") == "1081\n"
    assert run_python("1/0") == "ZeroDivisionError: division by zero"
    assert fixture_search("nothing known") == "No results."
    for task in fixture_tasks(seed=1, n=60):
        pieces = trajectory_text(task)
        assert pieces[-1][0].endswith(f"<answer>{task.answer}</answer>") and pieces[-1][1]
        if task.family != "direct":
            assert len(pieces) == 3 and not pieces[1][1]
            assert task.answer in pieces[1][0]  # the observation holds the answer
    greeting = FixtureTask("Hello!", "Hello! I can search and run Python to answer questions.", "direct")
    assert trajectory_text(greeting) == [
        ("<think>This is a greeting.</think>\n<answer>Hello! I can search and run Python to answer questions.</answer>",
         True)
    ]


@pytest.fixture(scope="module")
def trained(tiny_path) -> tuple[AutoModelForCausalLM, AutoTokenizer]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_path, local_files_only=True)
    return AutoModelForCausalLM.from_pretrained(tiny_path, local_files_only=True).eval(), tokenizer


def _first_turn(model: AutoModelForCausalLM, tokenizer: AutoTokenizer, question: str) -> str:
    ids = build_prompt_ids(tokenizer, TAPO, question)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             stop_strings=list(TAPO.stop_strings(TAPO.tool_names)), tokenizer=tokenizer)
    return tokenizer.decode(out[0, len(ids):])


@pytest.mark.parametrize("family, tag", [("fact", "search"), ("arithmetic", "code")])
def test_trained_model_calls_the_right_tool(trained, family: str, tag: str) -> None:
    model, tokenizer = trained
    tasks = [t for t in fixture_tasks(seed=2024, n=40) if t.family == family][:2]
    for task in tasks:
        text = _first_turn(model, tokenizer, task.question)
        assert text.startswith("<think>") and f"</think>\n<{tag}>" in text and text.endswith(f"</{tag}>"), text
