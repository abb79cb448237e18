"""The ``code`` tool on top of the sandbox pool, and a one-shot helper for the command line."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from agent_runtime.sandbox import bwrap, seccomp
from agent_runtime.sandbox.errors import SandboxUnavailableError, unavailable_message
from agent_runtime.sandbox.limits import SandboxLimits
from agent_runtime.sandbox.pool import DEFAULT_PRELOAD, SandboxPool
from agent_runtime.sandbox.result import ExecResult
from agent_runtime.sandbox.unsafe import WARNING, UnsandboxedRunner
from agent_runtime.tools import ToolOutput

log = logging.getLogger(__name__)


class CodeTool:
    """Model-written Python, run in the bubblewrap sandbox (``Tool`` protocol, name ``code``).

    The constructor probes bubblewrap and raises ``SandboxUnavailableError`` if it cannot run here,
    unless ``unsafe_unsandboxed=True`` (plain subprocesses with rlimits; a warning on every call); it
    raises ``SeccompUnavailableError`` (a ``SandboxUnavailableError``) where libseccomp is missing,
    unless ``TAPO_SANDBOX_ALLOW_NO_SECCOMP=1`` accepts running without the seccomp filter.
    Workers start on the first call, or on ``await start()``; ``await close()`` ends them. Use it
    from one event loop. For variables that persist across one trajectory's calls, give that
    trajectory ``tool.session(trajectory_id)`` instead of the tool itself.
    """

    name = "code"

    def __init__(
        self,
        *,
        pool_size: int = 2,
        limits: SandboxLimits | None = None,
        unsafe_unsandboxed: bool = False,
        max_sessions: int = 16,
        session_idle_s: float = 600.0,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self._runner: SandboxPool | UnsandboxedRunner
        if unsafe_unsandboxed:
            log.warning(WARNING)
            self._runner = UnsandboxedRunner(self.limits)
        else:
            reason = bwrap.probe(self.limits)
            if reason is not None:
                raise SandboxUnavailableError(unavailable_message(reason))
            seccomp.required_program()  # SeccompUnavailableError now rather than at the first call
            self._runner = SandboxPool(
                pool_size, self.limits, max_sessions=max_sessions, session_idle_s=session_idle_s, preload=preload
            )

    @property
    def sandboxed(self) -> bool:
        return isinstance(self._runner, SandboxPool)

    @property
    def pool(self) -> SandboxPool | None:
        return self._runner if isinstance(self._runner, SandboxPool) else None

    async def __call__(self, argument: str) -> ToolOutput:
        return tool_output(await self.run(argument))

    async def run(self, code: str, *, timeout_s: float | None = None, session_id: str | None = None) -> ExecResult:
        return await self._runner.run(code, timeout_s=timeout_s, session_id=session_id)

    def session(self, session_id: str) -> SessionCodeTool:
        return SessionCodeTool(self, session_id)

    async def end_session(self, session_id: str) -> None:
        if isinstance(self._runner, SandboxPool):
            await self._runner.end_session(session_id)

    async def start(self) -> None:
        await self._runner.start()

    async def close(self) -> None:
        await self._runner.close()


class SessionCodeTool:
    """The ``code`` tool bound to one session: variables persist across its calls."""

    name = "code"

    def __init__(self, tool: CodeTool, session_id: str) -> None:
        self._tool = tool
        self.session_id = session_id

    async def __call__(self, argument: str) -> ToolOutput:
        return tool_output(await self._tool.run(argument, session_id=self.session_id))

    async def close(self) -> None:
        await self._tool.end_session(self.session_id)


def tool_output(result: ExecResult) -> ToolOutput:
    return ToolOutput(result.output, ok=result.ok, images=[f"data:image/png;base64,{b}" for b in result.images])


def exec_once(
    code: str, timeout: float = 10.0, *, limits: SandboxLimits | None = None, unsafe_unsandboxed: bool = False
) -> dict[str, Any]:
    """Runs ``code`` once in a fresh sandbox: ``{ok, output, seconds, exit_code, signal, timed_out, ...}``.

    For the command line (``tapo exec``); a server keeps a ``CodeTool`` instead. Raises
    ``SandboxUnavailableError`` where bubblewrap cannot run, unless ``unsafe_unsandboxed``.
    """

    async def once() -> ExecResult:
        runner: SandboxPool | UnsandboxedRunner
        if unsafe_unsandboxed:
            runner = UnsandboxedRunner(limits)
        else:  # one worker, no warm imports: start-up is most of a one-off's cost
            runner = SandboxPool(1, limits, preload=(), max_sessions=1)
        try:
            return await runner.run(code, timeout_s=timeout)
        finally:
            await runner.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(once()).to_dict()
    # Called from async code: run on a thread of its own rather than block or nest the caller's loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, once()).result().to_dict()
