"""The `tapo` command as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TAPO = [sys.executable, "-m", "tapo_cli"]


def tapo(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TAPO, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )


def test_the_five_packages_import():
    proc = subprocess.run([sys.executable, "-c", "import agent_runtime, server, training, clients, tapo_cli.app"],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_the_installed_tapo_script_is_the_tapo_cli_app():
    """The console script of the editable install runs ``tapo_cli`` (the composition root), not the core."""
    from agent_runtime import __version__

    script = Path(sys.executable).with_name("tapo")
    assert "tapo_cli" in script.read_text()
    proc = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == __version__, proc.stderr


def test_version_and_help():
    from agent_runtime import __version__

    assert tapo("version").stdout.strip() == __version__
    help_text = tapo("--help").stdout
    for command in ("run", "exec", "index", "search", "tiny-model", "version"):
        assert command in help_text


def test_run_json_streams_events_and_ends_with_the_trajectory(tiny_path: Path):
    proc = tapo("run", "What is 12 * 34?", "--model", str(tiny_path), "--json", "--max-tool-calls", "2")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and "token" in kinds
    # Tool calls in the one ToolStep shape the server streams: running, then done with the same id.
    steps = [e for e in events if e["type"] == "tool_step"]
    assert [s["status"] for s in steps] == ["running", "done"]  # the fixture model calls the code tool once
    assert steps[0]["id"] == steps[1]["id"] and steps[1]["name"] == "code" and steps[1]["ok"], steps[1]
    assert set(steps[1]) - {"type"} == {"id", "index", "name", "arguments", "status", "ok", "output", "hits",
                                        "images", "seconds", "injected_tokens"}
    record = events[-1]
    assert len(record["completion_ids"]) == len(record["mask"]) == len(record["logprobs"])
    text = "".join(e["text"] for e in events if e["type"] in ("token", "injected"))
    assert text == record["text"]
    assert record["question"] == "What is 12 * 34?" and "final_answer" in record and "gold" in record
    assert record["tool_steps"] == [{k: v for k, v in steps[1].items() if k != "type"}]


def test_run_prints_the_trace_then_the_answer_on_its_own_line_and_warns_of_nothing():
    """The default model (the demo agent: an adapter loaded through peft, bm25's warm-up compiling beside it)."""
    proc = tapo("run", "What is 4821 * 37?", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("</answer>\nAnswer: 178377\n"), proc.stdout[-200:]
    # stderr holds the tool calls and the usage line; no warning from a library or from the sandbox
    assert "← code ok" in proc.stderr and "finish=stop" in proc.stderr
    assert "Warning" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr


def test_run_json_ends_with_a_record_that_sft_reads(tiny_path: Path, tiny_tokenizer, tmp_path: Path):
    from agent_runtime.protocol import TAPO
    from training.sft import load_trajectories, sft_dataset

    proc = tapo("run", "What is 12 * 34?", "--model", str(tiny_path), "--json", "--max-tool-calls", "2")
    assert proc.returncode == 0, proc.stderr
    done = proc.stdout.splitlines()[-1]
    path = tmp_path / "runs.jsonl"
    path.write_text(done + "\n")
    [record] = load_trajectories([path], correct_only=False)
    [row] = sft_dataset([record], tiny_tokenizer, TAPO, max_length=4096)
    assert row["input_ids"] == record["prompt_ids"] + record["completion_ids"]  # the ids the run sampled


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/model"], "no such directory"),
        (["--protocol", "klingon"], "unknown protocol"),
        (["--engine", "warp"], "unknown engine"),
        (["--engine", "remote"], "--engine-url"),
        (["--search-backend", "retriever"], "url"),
    ],
)
def test_bad_options_get_a_clear_error_and_no_traceback(args, message, tiny_path):
    if "--model" not in args:
        args = [*args, "--model", str(tiny_path)]
    proc = tapo("run", "hi", *args)
    assert proc.returncode == 2
    assert message.lower() in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_exec_runs_code_in_the_sandbox():
    proc = tapo("exec", "--code", "print(6 * 7)")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["output"].strip() == "42" and result["seconds"] >= 0


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_server_off_loopback_needs_a_key_or_insecure(command):
    proc = tapo(command, "--host", "0.0.0.0", "--model", "tiny", TAPO_API_KEY="")
    assert proc.returncode == 2
    assert "--host 0.0.0.0 exposes a server that runs model-written code" in proc.stderr
    assert "--api-key" in proc.stderr and "Traceback" not in proc.stderr
