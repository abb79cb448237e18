"""Tools from MCP servers (``--mcp``), through the official ``mcp`` SDK.

Each server is connected once, by a task of its own that holds the session (the SDK's task groups
must be entered and left in one task); its tools are listed at start-up and offered to a
function-calling model as functions. Calls come from any request's task. A server that dies or
stops answering turns the call into a tool error that the model is shown, never a failed request,
and the connection is made again for the calls after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

import jsonschema

from agent_runtime.functions import BUILTIN_FUNCTIONS, Function
from agent_runtime.tools import ToolFailure, ToolOutput, ToolRegistry

log = logging.getLogger(__name__)

# JSON-RPC error code the SDK raises when the connection closes under a request.
_CONNECTION_CLOSED = -32000


class McpStartError(ValueError):
    """An MCP server that could not be started, reached or listed: the process does not start without it."""


@dataclass(frozen=True)
class McpServerSpec:
    """One ``--mcp`` value: an ``http(s)://`` URL (streamable HTTP), or a command line (stdio)."""

    text: str

    @classmethod
    def parse(cls, text: str) -> McpServerSpec:
        text = text.strip()
        if not text:
            raise McpStartError("--mcp needs a command line (stdio) or an http(s):// URL (streamable HTTP)")
        spec = cls(text)
        if not spec.is_url:
            try:
                if not shlex.split(text):
                    raise ValueError("no command")
            except ValueError as exc:
                raise McpStartError(f"--mcp {text!r}: not a command line: {exc}") from None
        return spec

    @property
    def is_url(self) -> bool:
        return self.text.startswith(("http://", "https://"))

    def target(self) -> Any:
        """What ``mcp.Client`` connects to."""
        if self.is_url:
            return self.text
        from mcp.client.stdio import StdioServerParameters

        command, *args = shlex.split(self.text)
        return StdioServerParameters(command=command, args=args)


def _describe(exc: BaseException) -> str:
    """The innermost cause of a failure, in one line (the SDK wraps them in task-group exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def result_text(result: Any) -> str:
    """A ``CallToolResult`` as the text the model reads: its text blocks, other blocks named, and its
    structured content as JSON where it has nothing else."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {block.mime_type}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            parts.append(getattr(block.resource, "text", None) or f"[resource: {block.resource.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class McpConnection:
    """One MCP server's session, held by a task that reconnects it after a failure."""

    def __init__(self, spec: McpServerSpec, *, call_timeout: float, connect_timeout: float) -> None:
        self.spec = spec
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.tools: list[Any] = []  # mcp_types.Tool, as listed on the first connection
        self.server_name = ""
        self._client: Any = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._ever_connected = False
        self._failures = 0  # reconnections tried since the connection was lost
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return self.server_name or self.spec.text

    async def start(self) -> None:
        """Connect and list the tools, or raise :class:`McpStartError` saying why not."""
        self._task = asyncio.create_task(self._hold(), name=f"mcp {self.spec.text}")
        connected = asyncio.create_task(self._connected.wait())
        await asyncio.wait({self._task, connected}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        if not self._connected.is_set():
            reason = _describe(self._error) if self._error else f"no answer within {self.connect_timeout:g} s"
            await self.aclose()
            raise McpStartError(f"--mcp {self.spec.text}: cannot connect: {reason}")

    async def _hold(self) -> None:
        from mcp import Client

        while not self._closing:
            try:
                async with Client(self.spec.target()) as client:
                    if not self._ever_connected:
                        self.tools = await _list_tools(client)
                        self.server_name = client.server_info.name if client.server_info else ""
                    self._client = client
                    self._lost.clear()
                    self._ever_connected = True
                    self._connected.set()
                    self._failures = 0
                    await self._lost.wait()
            except Exception as exc:  # a dead process or a refused connection: said, then tried again
                self._error = exc
            finally:
                self._client = None
                self._connected.clear()
            if self._closing or not self._ever_connected:
                return
            self._failures += 1
            delay = min(30.0, 0.25 * 2 ** self._failures)
            log.warning("MCP server %s: %s (%s); reconnecting in %.1f s", self.label,
                        "connection lost" if self._failures == 1 else "still unreachable",
                        _describe(self._error) if self._error else "closed", delay,
                        extra={"mcp_server": self.spec.text})
            await asyncio.sleep(delay)

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutput:
        client = await self._ready_client()
        try:
            result = await asyncio.wait_for(client.call_tool(name, arguments), self.call_timeout)
        except TimeoutError:
            raise ToolFailure(f"Error: the MCP tool {name} gave no result within {self.call_timeout:g} s.") from None
        except Exception as exc:
            from mcp.shared.exceptions import MCPError

            if isinstance(exc, MCPError) and exc.error.code != _CONNECTION_CLOSED:
                return ToolOutput(f"Error: {exc.error.message}", ok=False)  # refused by the server: the call's fault
            self._mark_lost()
            raise ToolFailure(f"Error: the MCP server {self.label} failed during the call ({_describe(exc)}).") from exc
        return ToolOutput(result_text(result), ok=not result.is_error)

    def _mark_lost(self) -> None:
        """The session is dead: the calls after this one wait for the next (the holding task makes it)."""
        self._client = None
        self._connected.clear()
        self._lost.set()

    async def _ready_client(self) -> Any:
        if not self._connected.is_set() and not self._closing and self._failures <= 1:
            try:  # the first reconnection after a loss is waited for, briefly
                await asyncio.wait_for(self._connected.wait(), min(5.0, self.connect_timeout))
            except TimeoutError:
                pass
        client = self._client
        if client is None:
            reason = f": {_describe(self._error)}" if self._error else ""
            raise ToolFailure(f"Error: the MCP server {self.label} is not connected{reason}.")
        return client

    async def aclose(self) -> None:
        self._closing = True
        self._lost.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, 10.0)  # on timeout wait_for cancels the task, and its session with it
        except TimeoutError:
            log.warning("MCP server %s did not close within 10 s; its session was cancelled", self.label)
        except Exception:  # closing after a failure: nothing left to release
            pass


async def _list_tools(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor = None
    for _ in range(100):  # a server that pages for ever cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class McpTool:
    """A registry tool that runs one MCP tool; its argument is the call's JSON arguments object."""

    def __init__(self, name: str, connection: McpConnection, tool_name: str) -> None:
        self.name = name
        self._connection = connection
        self._tool_name = tool_name

    async def __call__(self, argument: str) -> ToolOutput:
        return await self._connection.call(self._tool_name, json.loads(argument) if argument.strip() else {})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "mcp"


class McpServers:
    """The MCP servers of one process: connected together, their tools registered, closed together.

    A tool keeps its own name unless a built-in tool, a built-in function or an earlier MCP tool has
    it; then it is prefixed with its server's name (``weather_search``).
    """

    def __init__(self, specs: Sequence[str], *, call_timeout: float = 60.0, connect_timeout: float = 30.0) -> None:
        self.connections = [McpConnection(McpServerSpec.parse(s), call_timeout=call_timeout,
                                          connect_timeout=connect_timeout) for s in specs]
        self.functions: list[Function] = []
        self.tools_by_server: dict[str, list[str]] = {}  # server label (slugged name) -> its offered tools
        self.connected = False

    async def connect(self, registry: ToolRegistry) -> list[Function]:
        """Start every server and register its tools in ``registry``; all or none."""
        results = await asyncio.gather(*(c.start() for c in self.connections), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.aclose()
            raise failures[0]
        taken = set(registry.names) | set(BUILTIN_FUNCTIONS) | {f.name for f in BUILTIN_FUNCTIONS.values()}
        for connection in self.connections:
            offered = []
            for tool in connection.tools:
                try:
                    jsonschema.validators.validator_for(tool.input_schema).check_schema(tool.input_schema)
                except jsonschema.SchemaError as exc:
                    log.warning("MCP server %s: tool %s not offered: its input schema is invalid (%s)",
                                connection.label, tool.name, exc.message)
                    continue
                name = tool.name if tool.name not in taken else f"{_slug(connection.label)}_{tool.name}"
                suffix = 2
                while name in taken:
                    name, suffix = f"{_slug(connection.label)}_{tool.name}_{suffix}", suffix + 1
                taken.add(name)
                registry.register(McpTool(name, connection, tool.name))
                self.functions.append(Function(name, tool.description or "", tool.input_schema, tool=name))
                offered.append(name)
            self.tools_by_server.setdefault(_slug(connection.label), []).extend(offered)
            log.info("MCP server %s (%s): tools %s", connection.label, connection.spec.text, ", ".join(offered) or "none")
        self.connected = True
        return self.functions

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.connections))
