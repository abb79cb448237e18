"""Host-side handle of one sandboxed worker process: start it, send it requests, kill it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from agent_runtime.sandbox import procs
from agent_runtime.sandbox.errors import SandboxError
from agent_runtime.sandbox.framing import HEADER, FrameError, decode_body, encode_frame, frame_length

log = logging.getLogger(__name__)

REPLY_LIMIT_BYTES = 8 * 1024 * 1024  # a reply holds at most two capture buffers; anything larger is broken
STDERR_TAIL_LINES = 20


class WorkerDied(SandboxError):
    """The worker exited or broke the protocol during a request."""


class WorkerTimedOut(SandboxError):
    """The worker did not answer within the host's deadline."""


class SandboxWorker:
    """One long-lived sandboxed process (bwrap → setpriv → python worker_main.py).

    Not safe for concurrent requests: the pool hands a worker to one call at a time.
    """

    def __init__(
        self,
        command: list[str],
        host_uid: int | None,
        label: str,
        pass_fds: tuple[int, ...] = (),
        cgroup: Path | None = None,
    ) -> None:
        self.command = command
        self.pass_fds = pass_fds  # e.g. the seccomp program; the caller closes them after start()
        self.host_uid = host_uid  # None: shared uid (non-root mode); nothing to sweep by uid
        self.cgroup = cgroup  # the worker's own cgroup v2 (its command enters it), or None
        self.label = label
        self.preloaded: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The host pid of the worker's bwrap process (its process group), while it runs."""
        return self._proc.pid if self.alive else None

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    async def start(self, timeout_s: float) -> None:
        """Spawns the worker and waits for its ready frame (after its pre-imports)."""
        self._proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # our terminal's signals are not the sandbox's business
            close_fds=True,
            pass_fds=self.pass_fds,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},  # bwrap --clearenv drops it anyway
        )
        self._stderr_task = asyncio.create_task(self._collect_stderr(), name=f"{self.label}-stderr")
        try:
            ready = await asyncio.wait_for(self._read_reply(), timeout_s)
        except (TimeoutError, WorkerDied) as exc:
            self.kill()
            await self.wait_closed()
            raise SandboxError(
                f"sandbox worker {self.label} did not start: {exc!r}; stderr: {self.stderr_tail!r}"
            ) from None
        self.preloaded = list(ready.get("preloaded", []))
        log.debug("sandbox worker %s ready (uid %s, preloaded %s)", self.label, self.host_uid, self.preloaded)

    async def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """One request and its reply. Raises WorkerTimedOut or WorkerDied; the caller retires us then."""
        if not self.alive:
            raise WorkerDied(f"sandbox worker {self.label} is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(encode_frame(message))
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerDied(f"sandbox worker {self.label} closed its input: {exc!r}") from None
        try:
            return await asyncio.wait_for(self._read_reply(), timeout_s)
        except TimeoutError:
            raise WorkerTimedOut(f"sandbox worker {self.label} did not answer in {timeout_s:g} s") from None

    async def _read_reply(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            header = await self._proc.stdout.readexactly(HEADER.size)
            body = await self._proc.stdout.readexactly(frame_length(header, REPLY_LIMIT_BYTES))
            return decode_body(body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(f"sandbox worker {self.label} exited (stderr: {self.stderr_tail!r})") from exc
        except FrameError as exc:
            raise WorkerDied(f"sandbox worker {self.label} sent a bad frame: {exc}") from exc

    async def _collect_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text[:500])
            log.debug("sandbox worker %s: %s", self.label, text)

    def kill(self) -> None:
        """SIGKILL to bwrap: --die-with-parent then kills the sandbox's init, and with it the namespace."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def wait_closed(self) -> bool:
        """Waits for bwrap and every process of our uid to be gone; True if nothing is left."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                await self._proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._stderr_task, 1.0)
        if self.host_uid is None:
            return True
        return await asyncio.to_thread(procs.kill_uid_processes, self.host_uid)

    async def close(self) -> bool:
        """Ends the worker: EOF first (it exits by itself), SIGKILL if it does not within a moment."""
        if self.alive:
            assert self._proc is not None and self._proc.stdin is not None
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.5)
        self.kill()
        return await self.wait_closed()
