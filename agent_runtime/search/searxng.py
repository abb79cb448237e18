"""SearxNG's JSON API: ``GET {url}/search?q=…&format=json`` → ``{"results": [{title, url, content, score}]}``."""

from __future__ import annotations

from agent_runtime.search.base import Doc, SearchError
from agent_runtime.search.http_client import (
    DEFAULT_TIMEOUT_S,
    HTTPStatusError,
    LoopClient,
    field,
    optional_score,
    optional_str,
    request_json,
)

WHAT = "SearxNG"


class SearxngBackend:
    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/search") else f"{base}/search"
        self.identity = f"searxng:{self.endpoint}"
        self._client = LoopClient(timeout)

    async def search(self, query: str, k: int) -> list[Doc]:
        if k <= 0:
            return []
        try:
            body = await request_json(self._client, WHAT, "GET", self.endpoint, params={"q": query, "format": "json"})
        except HTTPStatusError as exc:
            if exc.status == 403:  # SearxNG's documented answer when the instance has JSON output off
                raise SearchError(
                    f"{exc} (enable the json format: `search: formats: [html, json]` in the instance's settings.yml)"
                ) from None
            raise
        results = field(body, "results", list, WHAT)
        return [
            Doc(optional_str(r, "title"), optional_str(r, "content"), optional_str(r, "url"), optional_score(r))
            for r in results[:k]
            if isinstance(r, dict)
        ]

    async def aclose(self) -> None:
        await self._client.aclose()
