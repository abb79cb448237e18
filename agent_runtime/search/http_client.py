"""Shared plumbing of the HTTP backends: one ``httpx.AsyncClient`` per event loop, errors as ``SearchError``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from agent_runtime.search.base import SearchError

DEFAULT_TIMEOUT_S = 10.0


class HTTPStatusError(SearchError):
    """The service answered with a status other than 200."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LoopClient:
    """An ``httpx.AsyncClient`` bound to the running event loop.

    httpx clients cannot outlive their loop, and callers such as a trainer's rollout function may
    call ``asyncio.run`` once per batch; a client is therefore made anew when the loop changes.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, headers: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self._headers = headers or {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None


async def request_json(client: LoopClient, what: str, method: str, url: str, **kwargs: Any) -> Any:
    """Send one request and decode its JSON body; every failure is a ``SearchError`` saying what went wrong."""
    try:
        response = await client.get().request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise SearchError(f"{what} timed out after {client.timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise SearchError(f"{what} unreachable at {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise HTTPStatusError(f"{what} answered HTTP {response.status_code}: {_excerpt(response.text)}", response.status_code)
    try:
        return response.json()
    except ValueError:
        raise SearchError(f"{what} answered with a body that is not JSON: {_excerpt(response.text)}") from None


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def field(value: Any, key: str, kind: type, what: str) -> Any:
    """``value[key]`` checked to be a ``kind``; a missing or mistyped field is a ``SearchError``."""
    if not isinstance(value, dict) or not isinstance(value.get(key), kind):
        raise SearchError(f"{what} answered in an unexpected shape: no {kind.__name__} field {key!r}")
    return value[key]


def optional_str(value: dict[str, Any], key: str) -> str:
    item = value.get(key)
    return item if isinstance(item, str) else ""


def optional_score(value: dict[str, Any], key: str = "score") -> float | None:
    item = value.get(key)
    return float(item) if isinstance(item, (int, float)) and not isinstance(item, bool) else None
