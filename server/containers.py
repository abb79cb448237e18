"""Code interpreter containers: a sandbox session kept for one conversation of one API key.

A container is a session worker of the sandbox pool (:meth:`~agent_runtime.sandbox.CodeTool.session`):
its Python globals and its files outlive a call, and a request that names it (a Responses
``container`` id, a continuation of a response that used it, a chat ``agent.session_id``) runs its
code there. It belongs to the key that made it, never to another. A container whose requests ended
without running code ends with them (its worker was never started); past ``idle_s`` without a call
one ends and its worker is reaped. At ``max_live`` live containers a new one closes the same key's
least recently used idle container, and is refused (429) where that key has none: another key's is
never closed. Records go to the response store, so that an ended container's id answers "ended",
not "unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.sandbox import CodeTool
from agent_runtime.tools import ToolRegistry
from server.errors import APIError
from server.response_store import ResponseStore

log = logging.getLogger(__name__)

DEFAULT_IDLE_S = 20 * 60.0
DEFAULT_MAX_LIVE = 16


@dataclass
class Container:
    id: str
    owner: str
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0  # requests running code in it now: it does not expire under them
    ran_code: bool = False

    def release(self) -> None:
        self.in_use -= 1
        self.last_used = time.monotonic()


class _ContainerCode:
    """The code tool of one request, bound to its container: records that the container ran code."""

    name = "code"

    def __init__(self, session: Any, container: Container) -> None:
        self._session = session
        self._container = container

    async def __call__(self, argument: str) -> Any:
        self._container.ran_code = True
        return await self._session(argument)


class Containers:
    def __init__(self, code: CodeTool, *, store: ResponseStore | None = None, max_live: int = DEFAULT_MAX_LIVE,
                 idle_s: float = DEFAULT_IDLE_S) -> None:
        self.code = code
        self.store = store
        self.max_live = max_live
        self.idle_s = idle_s
        self._live: dict[str, Container] = {}
        self._named: dict[tuple[str, str], str] = {}  # (owner, chat session id) -> container id
        self._reaper: asyncio.Task[None] | None = None

    @staticmethod
    def supported(tool: object) -> bool:
        """Whether ``tool`` keeps state across calls: the sandboxed ``CodeTool`` does."""
        return isinstance(tool, CodeTool) and tool.sandboxed

    @property
    def live(self) -> list[str]:
        return list(self._live)

    async def open(self, owner: str, container_id: str | None = None, *, param: str | None = None) -> Container:
        """``owner``'s container ``container_id`` (404 if it has none such, or it ended), or a new one."""
        await self.reap()  # first: an id past its idle time is ended, not handed out
        if container_id is not None:
            container = self._live.get(container_id)
            if container is None or container.owner != owner:
                ended = container is None and self.store is not None and await asyncio.to_thread(
                    self.store.container_known, owner, container_id)
                why = "has ended (idle past its timeout, or the server restarted)" if ended else "does not exist"
                raise APIError(404, f"container {container_id!r} {why}: use {{\"type\": \"auto\"}} for a new one",
                               type="not_found_error", param=param, code="container_not_found")
            return self._hold(container)
        if len(self._live) >= self.max_live:
            idle = [c for c in self._live.values() if c.owner == owner and c.in_use == 0]
            if idle:
                await self.end(min(idle, key=lambda c: c.last_used).id)
        if len(self._live) >= self.max_live:
            raise APIError(429, f"all {self.max_live} code containers are in use; end one or retry when one has "
                                f"been idle for {self.idle_s:g} s", type="rate_limit_error", param=param,
                           code="container_limit_reached", headers={"Retry-After": "60"})
        container = Container(f"cntr_{uuid.uuid4().hex}", owner)
        self._live[container.id] = container
        if self.store is not None:
            await asyncio.to_thread(self.store.container_started, owner, container.id)
        log.info("container %s started", container.id)
        return self._hold(container)

    async def open_named(self, owner: str, name: str, *, param: str | None = None) -> Container:
        """A chat session's container, by the client's own name for it (made on first use)."""
        await self.reap()
        container_id = self._named.get((owner, name))
        if container_id is not None and container_id in self._live:
            return await self.open(owner, container_id, param=param)
        container = await self.open(owner, param=param)
        self._named[(owner, name)] = container.id
        return container

    def is_live(self, owner: str, container_id: str | None) -> bool:
        container = self._live.get(container_id) if container_id else None
        return container is not None and container.owner == owner

    def tools(self, registry: ToolRegistry, container: Container) -> ToolRegistry:
        """``registry`` with its code tool running in ``container``."""
        return registry.replacing(_ContainerCode(self.code.session(container.id), container))

    def _hold(self, container: Container) -> Container:
        container.in_use += 1
        container.last_used = time.monotonic()
        return container

    async def reap(self) -> None:
        """End the containers idle past ``idle_s`` (their workers are killed), and those whose
        requests ended without running code."""
        deadline = time.monotonic() - self.idle_s
        for container in [c for c in self._live.values()
                          if c.in_use == 0 and (c.last_used < deadline or not c.ran_code)]:
            await self.end(container.id)

    async def end(self, container_id: str) -> None:
        container = self._live.pop(container_id, None)
        if container is None:
            return
        self._named = {k: v for k, v in self._named.items() if v != container_id}
        await self.code.end_session(container_id)
        if self.store is not None:
            await asyncio.to_thread(self.store.container_ended, container_id)
        log.info("container %s ended", container_id)

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="container-reaper")

    async def _reap_forever(self) -> None:
        period = max(0.2, min(60.0, self.idle_s / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await self.reap()
            except Exception:  # a failed clean-up is logged; the next round tries again
                log.exception("reaping idle containers failed")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for container_id in list(self._live):
            await self.end(container_id)
