"""What one server process holds: the engine, the tools, defaults and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_runtime.backends.base import Backend
from agent_runtime.budget import Budget
from agent_runtime.protocol import TAPO, Protocol
from agent_runtime.tools import ToolRegistry
from server.errors import APIError
from server.limits import ConcurrencyLimiter
from server.metrics import Metrics


@dataclass
class ServerState:
    backend: Backend
    tools: ToolRegistry
    model_name: str
    protocol: Protocol = TAPO
    budget: Budget = field(default_factory=Budget)
    temperature: float = 0.0  # greedy unless a request says otherwise
    api_key: str | None = None
    max_concurrency: int = 32
    metrics: Metrics = field(default_factory=Metrics)
    limiter: ConcurrencyLimiter = field(init=False)
    extra_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limiter = ConcurrencyLimiter(self.max_concurrency)

    def check_model(self, name: str) -> None:
        """Requests must name the served model (404 ``model_not_found`` otherwise)."""
        if name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                           type="not_found_error", param="model", code="model_not_found")

    async def aclose(self) -> None:
        await self.tools.aclose()
        await self.backend.aclose()
