"""Cold-start SFT: trajectories re-tokenized piece by piece, tool output masked exactly as in RL."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agent_runtime.models.fixture_tasks import fixture_tasks, trajectory_text
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO, TORL
from training.data import DataError
from training.eval_report import step_curve
from training.sft import completion_pieces, load_trajectories, sft_dataset

ROOT = Path(__file__).resolve().parents[1]


def _record(question: str, pieces: list[tuple[str, bool]], correct: float = 1.0, answer: str | None = "x") -> dict:
    return {"question": question, "text": "".join(t for t, _ in pieces), "correct": correct, "final_answer": answer}


def test_pieces_split_tool_observations_from_model_text() -> None:
    for task in fixture_tasks(seed=5, n=20):
        pieces = trajectory_text(task)  # how the tiny model's trajectories were made: ground truth
        assert completion_pieces("".join(t for t, _ in pieces), TAPO) == pieces


def test_pieces_use_the_protocol_observation_template() -> None:
    text = "let me run it\n```python\nprint(2)\n```\n" + TORL.format_observation("2") + "so \\boxed{2}"
    pieces = completion_pieces(text, TORL)
    assert [m for _, m in pieces] == [True, False, True]
    assert pieces[1][0] == TORL.format_observation("2")


def test_a_trajectory_with_an_invalid_action_message_is_no_example() -> None:
    text = "<think>x</think>\n<serch>q</serch>" + TAPO.invalid_action_message(("search",)) + "<answer>1</answer>"
    assert completion_pieces(text, TAPO) is None


def test_labels_cover_model_text_and_eos_only(tiny_tokenizer) -> None:
    task = next(t for t in fixture_tasks(seed=5, n=20) if t.family == "fact")
    pieces = trajectory_text(task)
    data = sft_dataset([_record(task.question, pieces)], tiny_tokenizer, TAPO, max_length=2048)
    ids, labels = data[0]["input_ids"], data[0]["labels"]
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, task.question)
    assert ids[: len(prompt)] == prompt and all(x == -100 for x in labels[: len(prompt)])
    learned = tiny_tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    model_text = "".join(t for t, is_model in pieces if is_model)
    assert learned == model_text + tiny_tokenizer.eos_token
    observation = next(t for t, is_model in pieces if not is_model)
    assert observation.strip() not in learned


def test_only_correct_answered_records_are_kept_and_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    good = _record("q1", [("<answer>1</answer>", True)])
    wrong = _record("q2", [("<answer>2</answer>", True)], correct=0.0)
    unanswered = _record("q3", [("hmm", True)], answer=None)
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, wrong, unanswered)) + "\n")
    assert [r["question"] for r in load_trajectories([path])] == ["q1"]
    assert len(load_trajectories([path], correct_only=False)) == 3
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DataError, match=rf"{path}:2: bad JSON"):
        load_trajectories([path])


def _tapo(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.tapo", "--config", "configs/tiny-cpu.yaml",
                           "--output-dir", str(out), *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_shortened_recipe_sft_then_tapo_raises_the_training_reward(tmp_path: Path, tiny_path) -> None:
    """The demo recipe's shape on the tiny model and a fixed seed: SFT writes a LoRA adapter, TAPO goes
    on training that same adapter, and the mean reward of its last steps is above that of its first
    steps and above a control run with learning rate 0 (same seeds, same prompts)."""
    data = tmp_path / "traj.jsonl"
    with data.open("w") as f:
        for task in fixture_tasks(seed=9, n=24):
            f.write(json.dumps(_record(task.question, trajectory_text(task), answer=task.answer)) + "\n")
    sft_out = tmp_path / "sft"
    # fp32 on every CPU: bf16 autocast (the default where AMX or AVX512-BF16 is present) would start RL
    # from another adapter on some machines than on others.
    proc = subprocess.run([sys.executable, "-m", "training.sft", "--data", str(data), "--model", "tiny",
                           "--output-dir", str(sft_out), "--max-steps", "3", "--batch-size", "8",
                           "--learning-rate", "1e-3", "--compute", "fp32"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = sft_out / "final"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"
    sft_weights = load_file(adapter / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in sft_weights.items())

    # The same four prompts every step, so that steps compare: the reward moves only if the policy does.
    shortened = [f"model.name={adapter}", "lora.enabled=true", "data.train_limit=4", "grpo.max_steps=16",
                 "grpo.save_steps=16"]
    proc = _tapo(tmp_path / "rl", *shortened, "grpo.learning_rate=1e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    control = _tapo(tmp_path / "control", *shortened, "grpo.learning_rate=0.0")
    assert control.returncode == 0, control.stderr[-3000:]
    rewards, baseline = ([c["reward"] for c in step_curve(tmp_path / run)] for run in ("rl", "control"))
    assert len(rewards) == len(baseline) == 16
    # Each step's reward is a mean of 16 samples: compare halves (128 samples each), and compare with
    # the control step by step (the same seeds draw the same samples until the policies differ).
    # Measured in fp32 (AVX2): first half 0.63, second half 0.73; second half above the control by 0.09
    # on average, never below it at any step.
    first, last = sum(rewards[:8]) / 8, sum(rewards[8:]) / 8
    above_control = sum(r - b for r, b in zip(rewards[8:], baseline[8:])) / 8
    assert last >= first + 0.05, rewards
    assert above_control >= 0.05, (rewards, baseline)

    rl_weights = load_file(tmp_path / "rl" / "adapter" / "adapter_model.safetensors")
    assert rl_weights.keys() == sft_weights.keys()  # the same adapter, trained further
    assert any(not torch.equal(rl_weights[k], sft_weights[k]) for k in sft_weights)
    assert (tmp_path / "rl" / "final" / "config.json").is_file()


def test_an_interrupted_sft_run_resumes_and_an_adapter_goes_on_training(tmp_path: Path, tiny_path) -> None:
    """Long CPU runs checkpoint every --save-steps and go on with --resume (same schedule and data order):
    a run stopped after step 2 and resumed to step 4 ends with the adapter of an uninterrupted 4-step run."""
    data = tmp_path / "traj.jsonl"
    with data.open("w") as f:
        for task in fixture_tasks(seed=5, n=16):
            f.write(json.dumps(_record(task.question, trajectory_text(task), answer=task.answer)) + "\n")

    def sft(out: Path, *extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "training.sft", "--data", str(data), "--model", "tiny",
                               "--output-dir", str(out), "--batch-size", "4", "--learning-rate", "1e-3",
                               "--compute", "fp32", "--save-steps", "2", "-v", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    sft(tmp_path / "whole", "--max-steps", "4")
    sft(tmp_path / "cut", "--max-steps", "4", "--limit", "16")
    # Interrupt: keep only the step-2 checkpoint, as a run killed before step 4 would leave it.
    import shutil

    shutil.rmtree(tmp_path / "cut" / "final")
    shutil.rmtree(tmp_path / "cut" / "checkpoint-4")
    resumed = sft(tmp_path / "cut", "--max-steps", "4", "--limit", "16", "--resume")
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    whole = load_file(tmp_path / "whole" / "final" / "adapter_model.safetensors")
    again = load_file(tmp_path / "cut" / "final" / "adapter_model.safetensors")
    assert whole.keys() == again.keys()
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], rtol=1e-4, atol=1e-6)

    # An adapter given as --model goes on training in that same adapter (one adapter ships).
    sft_model = tmp_path / "more"
    proc = subprocess.run([sys.executable, "-m", "training.sft", "--data", str(data), "--model",
                           str(tmp_path / "whole" / "final"), "--output-dir", str(sft_model), "--batch-size", "4",
                           "--max-steps", "2", "--learning-rate", "1e-3", "--compute", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    further = load_file(sft_model / "final" / "adapter_model.safetensors")
    assert further.keys() == whole.keys() and all(further[k].shape == whole[k].shape for k in whole)
    assert any(not torch.equal(further[k], whole[k]) for k in whole)
    config = json.loads((sft_model / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"


def test_no_usable_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_record("q", [("<answer>1</answer>", True)], correct=0.0)) + "\n")
    proc = subprocess.run([sys.executable, "-m", "training.sft", "--data", str(path), "--model", "tiny",
                           "--output-dir", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no trajectories to train on" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--save-steps", "--batch-size", "--limit"])
def test_a_count_below_one_is_a_clear_error(flag: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "training.sft", "--data", "x.jsonl", "--output-dir", str(tmp_path),
                           flag, "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{flag}: must be at least 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_shared_prefix_loss_equals_the_plain_loss_and_its_gradients(tiny_tokenizer, tiny_path) -> None:
    from transformers import AutoModelForCausalLM

    from agent_runtime.models.prefix_loss import prefix_shared_loss, shared_prefix_length

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tasks = fixture_tasks(seed=11, n=6)
    records = [_record(t.question, trajectory_text(t)) for t in tasks]
    data = sft_dataset(records, tiny_tokenizer, TAPO, max_length=2048)
    rows = [(r["input_ids"], r["labels"]) for r in data]
    prefix = shared_prefix_length([ids for ids, _ in rows]) - 1
    assert prefix > 200  # the system prompt

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated forward argument: once per SFT batch
        shared, n = prefix_shared_loss(model, rows, prefix, tiny_tokenizer.pad_token_id)
    shared_grads = grads(shared)
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [0] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    plain = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    assert n == int((labels[:, 1:] != -100).sum())
    assert shared.item() == pytest.approx(plain.item(), rel=1e-5)
    for a, b in zip(shared_grads, grads(plain)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


async def test_records_with_loop_ids_are_learned_on_those_ids(tiny_tokenizer) -> None:
    """The ids the loop sampled are the ids learned: a ``<response>`` block the model wrote itself is
    model text (learned), the tool's observation is not, and nothing is re-tokenized."""
    from scripted_backend import EOS, ScriptedBackend

    from agent_runtime.loop import run_to_end
    from agent_runtime.records import trajectory_record
    from agent_runtime.tools import ToolRegistry

    own = "<think>Earlier:\n\n<response>7</response>\n\nso search.</think>\n"
    backend = ScriptedBackend(tiny_tokenizer, [own + "<search>Paris</search>", "<answer>France</answer>" + EOS])
    tools = ToolRegistry()
    tools.add_function("search", lambda q: "Paris is in France.")
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, "Where is Paris?")
    traj = await run_to_end(prompt, backend, tools)
    record = trajectory_record(traj, id="r", question="Where is Paris?", gold=["France"], data_source="t", correct=1.0)

    [row] = sft_dataset([record], tiny_tokenizer, TAPO, max_length=4096)
    assert row["input_ids"] == traj.prompt_ids + traj.completion_ids
    expected = [-100] * len(traj.prompt_ids) + [i if m else -100 for i, m in zip(traj.completion_ids, traj.mask)]
    assert row["labels"] == expected
    learned = tiny_tokenizer.decode([i for i in row["labels"] if i != -100])
    assert "<response>7</response>" in learned and "Paris is in France." not in learned

    # Ids from another tokenizer (they do not decode to the text): re-tokenized from the text instead.
    foreign = {**record, "completion_ids": [5] * len(record["completion_ids"])}
    [row] = sft_dataset([foreign], tiny_tokenizer, TAPO, max_length=4096)
    assert row["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert row["input_ids"][len(prompt):] != foreign["completion_ids"]
