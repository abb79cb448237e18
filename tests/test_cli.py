"""The `tapo` command as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TAPO = [sys.executable, "-m", "agent_runtime.cli"]


def tapo(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TAPO, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )


def test_the_four_packages_import():
    proc = subprocess.run([sys.executable, "-c", "import agent_runtime, server, training, clients"], capture_output=True)
    assert proc.returncode == 0, proc.stderr


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
    assert "toolcall" in kinds and "toolresult" in kinds  # the fixture model calls the code tool
    call = next(e for e in events if e["type"] == "toolcall")
    assert call["name"] == "code"
    traj = events[-1]["trajectory"]
    assert len(traj["completion_ids"]) == len(traj["mask"]) == len(traj["logprobs"])
    text = "".join(e["text"] for e in events if e["type"] in ("token", "injected"))
    assert text == traj["text"]


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
