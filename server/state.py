"""What one server process holds: the engine, the tools, defaults and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_runtime.backends.base import Backend
from agent_runtime.budget import Budget
from agent_runtime.functions import Function
from agent_runtime.mcp_tools import McpServers
from agent_runtime.protocol import TAPO, Protocol
from agent_runtime.tools import ToolRegistry
from server.containers import Containers
from server.errors import APIError
from server.limits import ConcurrencyLimiter
from server.metrics import Metrics
from server.response_store import ResponseStore


@dataclass
class ServerState:
    backend: Backend
    tools: ToolRegistry
    model_name: str
    protocol: Protocol = TAPO
    budget: Budget = field(default_factory=Budget)
    temperature: float = 0.0  # greedy unless a request says otherwise
    api_keys: tuple[str, ...] = ()  # any of them opens the API; none: no key needed
    max_concurrency: int = 32
    metrics: Metrics = field(default_factory=Metrics)
    limiter: ConcurrencyLimiter = field(init=False)
    extra_info: dict[str, Any] = field(default_factory=dict)
    mcp: McpServers | None = None  # connected by start(); their tools join ``tools``
    store: ResponseStore | None = None  # stored responses; None: nothing is stored
    # Code containers; by default made where the code tool keeps state (the sandboxed CodeTool).
    containers: Containers | None = None
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.limiter = ConcurrencyLimiter(self.max_concurrency)
        code = self.tools.get("code")
        if self.containers is None and Containers.supported(code):
            self.containers = Containers(code, store=self.store)

    def check_model(self, name: str) -> None:
        """Requests must name the served model (404 ``model_not_found`` otherwise)."""
        if name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                           type="not_found_error", param="model", code="model_not_found")

    @property
    def mcp_functions(self) -> list[Function]:
        """The MCP servers' tools, as functions a function-calling model is offered."""
        return self.mcp.functions if self.mcp is not None else []

    async def start(self) -> None:
        """Warm the tools and connect the MCP servers (``McpStartError`` if one cannot be reached).
        ``tapo serve`` calls it before it listens, so that a bad ``--mcp`` is one line of error; the
        app's start-up calls it too, which then finds nothing left to do."""
        if self._started:
            return
        await self.tools.astart()
        if self.containers is not None:
            self.containers.start()
        if self.mcp is not None and not self.mcp.connected:
            await self.mcp.connect(self.tools)
        self._started = True

    async def aclose(self) -> None:
        if self.containers is not None:
            await self.containers.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()
        await self.tools.aclose()
        await self.backend.aclose()
