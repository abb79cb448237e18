"""Serper's Google search API: ``POST {base}/search {q, num}`` with header ``X-API-KEY``.

The answer holds ``organic: [{title, link, snippet, position}]`` and sometimes a
``knowledgeGraph {title, description, website}``; TAPO's own Serper client puts the knowledge panel
first, and so do we (within the k results). Serper gives no scores.
"""

from __future__ import annotations

from agent_runtime.search.base import Doc, SearchError
from agent_runtime.search.http_client import DEFAULT_TIMEOUT_S, LoopClient, field, optional_str, request_json

WHAT = "Serper"
SERPER_URL = "https://google.serper.dev"


class SerperBackend:
    def __init__(self, api_key: str, *, base_url: str = SERPER_URL, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = f"{base_url.rstrip('/')}/search"
        self.identity = f"serper:{self.endpoint}"  # never the key: identities end up in cache files and logs
        self._client = LoopClient(timeout, headers={"X-API-KEY": api_key})

    async def search(self, query: str, k: int) -> list[Doc]:
        if k <= 0:
            return []
        body = await request_json(self._client, WHAT, "POST", self.endpoint, json={"q": query, "num": k})
        if not isinstance(body, dict):
            raise SearchError(f"{WHAT} answered in an unexpected shape: a {type(body).__name__}, not an object")
        docs: list[Doc] = []
        panel = body.get("knowledgeGraph")
        if isinstance(panel, dict) and optional_str(panel, "title") and optional_str(panel, "description"):
            docs.append(Doc(panel["title"], panel["description"], optional_str(panel, "website")))
        organic = field(body, "organic", list, WHAT) if "organic" in body else []
        docs += [
            Doc(optional_str(r, "title"), optional_str(r, "snippet"), optional_str(r, "link"))
            for r in organic
            if isinstance(r, dict)
        ]
        return docs[:k]

    async def aclose(self) -> None:
        await self._client.aclose()
