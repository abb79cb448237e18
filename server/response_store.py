"""Stored responses: one embedded SQLite database in WAL mode, so that a kill loses no committed row.

A record keeps what ``GET /v1/responses/{id}`` returns (the response object), what
``/input_items`` lists, and the conversation as chat messages up to and including the response's own
reply, which ``previous_response_id`` continues. Each row belongs to an owner (a digest of the API
key that made it): another key finds nothing. Calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

DATABASE_NAME = "state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    conversation TEXT NOT NULL,
    container_id TEXT
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    ended_at INTEGER
);
"""


def default_state_dir() -> Path:
    return Path(platformdirs.user_data_dir("tapo-agents"))


def owner_of(api_key: str | None) -> str:
    """Who a request is: a digest of its key (never the key), or ``""`` on a server without keys."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest() if api_key else ""


@dataclass(frozen=True)
class StoredResponse:
    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]  # chat messages, as ``ChatMessage.model_dump`` writes them
    container_id: str | None = None  # the code container it ran in; a continuation reuses it


class ResponseStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # WAL: a commit is durable once written to the log, and a reader never sees half a write.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            # Containers are processes: none outlives the server that started it.
            db.execute("UPDATE containers SET ended_at = ? WHERE ended_at IS NULL", (int(time.time()),))

    @classmethod
    def in_dir(cls, state_dir: str | Path) -> ResponseStore:
        return cls(Path(state_dir) / DATABASE_NAME)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # Synchronous API (tests, tools); the server uses the async one below.

    def put(self, owner: str, record: StoredResponse) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (record.id, owner, int(record.response.get("created_at") or time.time()),
                        json.dumps(record.response), json.dumps(record.input_items), json.dumps(record.conversation),
                        record.container_id))

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        with self._connect() as db:
            row = db.execute("SELECT id, response, input_items, conversation, container_id FROM responses "
                             "WHERE id = ? AND owner = ?", (response_id, owner)).fetchone()
        if row is None:
            return None
        return StoredResponse(row[0], json.loads(row[1]), json.loads(row[2]), json.loads(row[3]), row[4])

    def delete(self, owner: str, response_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)).rowcount > 0

    def container_started(self, owner: str, container_id: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO containers VALUES (?, ?, ?, NULL)", (container_id, owner, int(time.time())))

    def container_ended(self, container_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE containers SET ended_at = ? WHERE id = ?", (int(time.time()), container_id))

    def container_known(self, owner: str, container_id: str) -> bool:
        """Whether ``owner`` had this container (now ended: a live one is in memory)."""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM containers WHERE id = ? AND owner = ?", (container_id, owner)).fetchone() \
                is not None

    async def aput(self, owner: str, record: StoredResponse) -> None:
        await asyncio.to_thread(self.put, owner, record)

    async def aget(self, owner: str, response_id: str) -> StoredResponse | None:
        return await asyncio.to_thread(self.get, owner, response_id)

    async def adelete(self, owner: str, response_id: str) -> bool:
        return await asyncio.to_thread(self.delete, owner, response_id)
