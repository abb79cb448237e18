"""Search-R1's retrieval server: ``POST {url}/retrieve {queries, topk, return_scores}``.

The answer is ``{"result": [[{"document": {...}, "score": s}, ...]]}``, one list per query. A
document carries ``contents`` (title on the first line, as in Search-R1's corpora); its BM25 server
also adds ``title`` and ``text``. We read ``contents`` first, as Search-R1's and TAPO's clients do.
"""

from __future__ import annotations

from typing import Any

from agent_runtime.search.base import Doc, SearchError, split_contents
from agent_runtime.search.http_client import DEFAULT_TIMEOUT_S, LoopClient, field, optional_score, optional_str, request_json

WHAT = "the retriever"


class RetrieverBackend:
    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        base = url.rstrip("/")
        # TAPO's and Search-R1's configs give the full endpoint (".../retrieve"); accept both spellings.
        self.endpoint = base if base.endswith("/retrieve") else f"{base}/retrieve"
        self.identity = f"retriever:{self.endpoint}"
        self._client = LoopClient(timeout)

    async def search(self, query: str, k: int) -> list[Doc]:
        if k <= 0:
            return []
        payload = {"queries": [query], "topk": k, "return_scores": True}
        body = await request_json(self._client, WHAT, "POST", self.endpoint, json=payload)
        per_query = field(body, "result", list, WHAT)
        if len(per_query) != 1 or not isinstance(per_query[0], list):
            raise SearchError(f"{WHAT} answered {len(per_query)} result lists for 1 query")
        return [_to_doc(item) for item in per_query[0][:k]]

    async def aclose(self) -> None:
        await self._client.aclose()


def _to_doc(item: Any) -> Doc:
    # With return_scores the items are {"document", "score"}; without, the documents themselves.
    document = item.get("document", item) if isinstance(item, dict) else item
    score = optional_score(item) if isinstance(item, dict) and "document" in item else None
    if not isinstance(document, dict):
        raise SearchError(f"{WHAT} answered in an unexpected shape: a document is a {type(document).__name__}")
    if isinstance(document.get("contents"), str):
        title, text = split_contents(document["contents"])
    else:
        title, text = optional_str(document, "title"), field(document, "text", str, WHAT)
    return Doc(title, text, optional_str(document, "url"), score)
