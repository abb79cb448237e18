"""`tapo serve` as a process: it starts, serves, and on SIGTERM exits leaving no sandbox process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from agent_runtime.sandbox import bwrap
from agent_runtime.sandbox.limits import SandboxLimits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_pids_in(namespaces: set[str]) -> list[int]:
    """Processes in the given PID namespaces (each sandbox worker has its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") in namespaces:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def descendants(pid: int) -> set[int]:
    """``pid``'s children, their children, and so on (from each process's parent in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def worker_namespaces(server_pid: int) -> set[str]:
    """PID namespaces of the server's own sandbox workers (not those of other servers on the machine)."""
    namespaces, own = set(), os.readlink(f"/proc/{server_pid}/ns/pid")
    for pid in descendants(server_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if b"worker_main.py" in cmdline and ns != own:
            namespaces.add(ns)
    return namespaces


@pytest.mark.skipif(not os.environ.get("CI") and bwrap.probe(SandboxLimits()) is not None, reason="no sandbox here")
def test_sigterm_ends_the_server_and_its_sandbox_workers(tiny_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapo_cli", "serve", "--model", str(tiny_path), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": tiny_path.name, "messages": [{"role": "user", "content": "What is 23 * 47?"}]},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        namespaces = worker_namespaces(proc.pid)
        assert namespaces, "the server should hold warm sandbox workers"
        assert sandbox_pids_in(namespaces)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        left = sandbox_pids_in(namespaces)
        for _ in range(20):
            if not left:
                break
            time.sleep(0.1)
            left = sandbox_pids_in(namespaces)
        details = {pid: open(f"/proc/{pid}/cmdline", "rb").read() for pid in left if os.path.exists(f"/proc/{pid}")}
        assert left == [], details
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
