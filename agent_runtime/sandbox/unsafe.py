"""The opt-in fallback without a sandbox: one plain subprocess per call, with rlimits only.

It has no isolation at all (network, files, other processes): for an operator's own trusted use
where bubblewrap cannot run. Every call logs a warning so that it never goes unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from agent_runtime.sandbox.bwrap import THREAD_ENV, worker_source_dir
from agent_runtime.sandbox.framing import HEADER, decode_body, encode_frame, frame_length
from agent_runtime.sandbox.limits import SandboxLimits
from agent_runtime.sandbox.pool import HOST_GRACE_S
from agent_runtime.sandbox.result import ExecResult
from agent_runtime.sandbox.worker import REPLY_LIMIT_BYTES

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0
WARNING = (
    "running model-written code WITHOUT a sandbox (unsafe_unsandboxed=True): "
    "it can reach the network, files and processes of this machine"
)


class UnsandboxedRunner:
    """Same ``run`` as ``SandboxPool`` (sessions excepted), one fresh process per call."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()

    def _command(self) -> list[str]:
        limits = self.limits
        command = [sys.executable, "-I", os.path.join(worker_source_dir(), "worker_main.py"), "--once", "--preload="]
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            return command
        return [
            prlimit,
            f"--as={limits.memory_mb << 20}",
            f"--fsize={limits.max_file_mb << 20}",
            f"--nofile={limits.max_open_files}",
            "--core=0",
            "--",
            *command,
        ]

    async def run(self, code: str, *, timeout_s: float | None = None, session_id: str | None = None) -> ExecResult:
        log.warning(WARNING)
        timeout = float(timeout_s if timeout_s is not None else self.limits.timeout_s)
        if session_id is not None:
            return ExecResult(ok=False, output="Error: code sessions need the sandbox.", seconds=0.0, sandboxed=False)
        request = {
            "op": "run",
            "code": code,
            "timeout_s": timeout,
            "capture_bytes": self.limits.capture_bytes,
            "limits": {
                "memory_mb": self.limits.memory_mb,
                "call_memory_mb": self.limits.call_memory_mb,
                "max_processes": self.limits.max_processes,
                "max_file_mb": self.limits.max_file_mb,
                "max_open_files": self.limits.max_open_files,
            },
        }
        with tempfile.TemporaryDirectory(prefix="tapo-unsandboxed-") as workdir:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": workdir,
                "TMPDIR": workdir,
                "LANG": "C.UTF-8",
                **{name: "1" for name in THREAD_ENV},
            }  # never the server's secrets
            proc = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(encode_frame(request))
                await proc.stdin.drain()

                async def read_frame() -> dict[str, Any]:
                    assert proc.stdout is not None
                    header = await proc.stdout.readexactly(HEADER.size)
                    return decode_body(await proc.stdout.readexactly(frame_length(header, REPLY_LIMIT_BYTES)))

                await asyncio.wait_for(read_frame(), STARTUP_TIMEOUT_S)  # the worker's "ready"
                reply = await asyncio.wait_for(read_frame(), timeout + HOST_GRACE_S)
            except TimeoutError:
                reply = {"ok": False, "timed_out": True}
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                reply = {"ok": False, "head": "[The code's process died.]"}
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return ExecResult.from_reply(reply, timeout, self.limits.max_output_chars, sandboxed=False)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
