"""The tool interface: a named async call on one string argument, and a registry of them."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol, runtime_checkable

log = logging.getLogger("agent_runtime.tools")


class ToolFailure(Exception):
    """Raised by a tool that failed for a reason of its own (its server unreachable, its sandbox pool
    gone); the message is what the model is shown."""


class ToolInfrastructureError(RuntimeError):
    """Tools kept failing for reasons that are not the model's (a dead sandbox pool, a search server
    down): training on their error messages would only teach the model that tools do not work."""


@dataclass(frozen=True)
class ToolOutput:
    """What a tool returns: the text the model sees, whether it worked, and optional structured hits."""

    text: str
    ok: bool = True
    hits: list[dict[str, Any]] = field(default_factory=list)  # search results: {title, url, score}
    images: list[str] = field(default_factory=list)  # figures the code drew, as data: URLs (PNG)


@dataclass(frozen=True)
class ToolResult:
    name: str
    output: ToolOutput
    seconds: float


@runtime_checkable
class Tool(Protocol):
    name: str

    async def __call__(self, argument: str) -> ToolOutput: ...


# Sync tools run here. It must be as large as the number of concurrent trajectories, or tool calls
# queue behind each other (asyncio's default executor has min(32, cpus + 4) threads).
_SYNC_TOOL_POOL = ThreadPoolExecutor(max_workers=256, thread_name_prefix="tool")


class FunctionTool:
    """A tool from a plain function ``str -> str | ToolOutput``, sync or async.

    Sync functions run on a large thread pool so that many trajectories' calls overlap.
    An exception becomes an in-band error for the model (``ok=False``), never a crash.
    """

    def __init__(self, name: str, fn: Callable[[str], Any]) -> None:
        self.name = name
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn)

    async def __call__(self, argument: str) -> ToolOutput:
        if self._is_async:
            value = await self._fn(argument)
        else:
            value = await asyncio.get_running_loop().run_in_executor(_SYNC_TOOL_POOL, self._fn, argument)
        return value if isinstance(value, ToolOutput) else ToolOutput(str(value))


class ToolRegistry:
    """Tools by name. ``call`` times the tool and turns its failures into in-band errors.

    A tool that *raises* (:class:`ToolFailure`, or any exception) has failed for a reason of its own
    (the model's mistakes come back as ``ok=False`` output, not as exceptions): the failure is logged
    as an error, the model still sees it, and after ``max_infrastructure_failures`` such failures in
    a row (training sets it; a server keeps serving) the call raises :class:`ToolInfrastructureError`.
    """

    def __init__(self, tools: Iterable[Tool] = (), *, max_infrastructure_failures: int | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.max_infrastructure_failures = max_infrastructure_failures
        self.infrastructure_failures = 0  # in a row
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def replacing(self, tool: Tool) -> ToolRegistry:
        """A registry with the same tools but ``tool`` in place of the one of its name (a request's
        own ``code`` bound to its container, say); this registry is unchanged."""
        other = ToolRegistry(max_infrastructure_failures=self.max_infrastructure_failures)
        other._tools = {**self._tools, tool.name: tool}
        return other

    def add_function(self, name: str, fn: Callable[[str], Any | Awaitable[Any]]) -> None:
        self.register(FunctionTool(name, fn))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    async def astart(self) -> None:
        """Warm what the tools hold (sandbox workers) so that the first call is not the slow one."""
        for tool in self._tools.values():
            start = getattr(tool, "start", None)
            if start is not None:
                result = start()
                if inspect.isawaitable(result):
                    await result

    async def aclose(self) -> None:
        """Release what the tools hold (sandbox workers, HTTP clients)."""
        for tool in self._tools.values():
            close = getattr(tool, "aclose", None) or getattr(tool, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result

    async def call(self, name: str, argument: str, timeout: float | None = None) -> ToolResult:
        start = time.perf_counter()
        tool = self._tools.get(name)
        if tool is None:
            output = ToolOutput(f"Error: no tool named {name!r} is available.", ok=False)
        else:
            try:
                async with asyncio.timeout(timeout):  # in this task: a cancelled caller leaves no orphan behind
                    output = await tool(argument)
            except TimeoutError:
                output = ToolOutput(f"Error: {name} timed out after {timeout:g} s.", ok=False)
            except ToolFailure as exc:  # the model sees the failure; the loop goes on
                self._infrastructure_failure(name, exc.__cause__ or exc)
                output = ToolOutput(str(exc), ok=False)
            except Exception as exc:
                self._infrastructure_failure(name, exc)
                output = ToolOutput(f"Error: {type(exc).__name__}: {exc}", ok=False)
            else:
                self.infrastructure_failures = 0
        return ToolResult(name, output, time.perf_counter() - start)

    def _infrastructure_failure(self, name: str, exc: Exception) -> None:
        self.infrastructure_failures += 1
        log.error("tool %s failed (%d in a row): %s: %s", name, self.infrastructure_failures, type(exc).__name__, exc,
                  extra={"tool": name, "failures_in_a_row": self.infrastructure_failures})
        limit = self.max_infrastructure_failures
        if limit is not None and self.infrastructure_failures >= limit:
            raise ToolInfrastructureError(
                f"the {name} tool failed {self.infrastructure_failures} times in a row (last: {type(exc).__name__}: "
                f"{exc}); stopping rather than training on its error messages") from exc
