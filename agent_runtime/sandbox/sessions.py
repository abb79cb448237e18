"""Sessions: a sandbox worker dedicated to one trajectory, whose variables persist across its calls.

Each session owns a whole worker (its own uid and namespaces), so one trajectory's code never
shares a process or a /tmp with another's. Their number is bounded: past ``max_sessions`` the least
recently used idle session is closed; idle ones expire after ``idle_s``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from agent_runtime.sandbox.worker import SandboxWorker


@dataclass
class SessionSlot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    worker: SandboxWorker | None = None
    last_used: float = field(default_factory=time.monotonic)
    had_state: bool = False  # a call has run in it: a fresh worker means lost variables


class SessionTable:
    def __init__(self, max_sessions: int, idle_s: float) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._slots: dict[str, SessionSlot] = {}

    def slot(self, session_id: str) -> SessionSlot:
        return self._slots.setdefault(session_id, SessionSlot())

    def items(self) -> list[tuple[str, SessionSlot]]:
        return list(self._slots.items())

    def live_count(self) -> int:
        return sum(1 for slot in self._slots.values() if slot.worker is not None)

    def least_recent_live(self, keep: str) -> SessionSlot | None:
        """The least recently used session with a worker, not in a call and not ``keep``.

        Its slot stays (without a worker) until it expires, so that its next call can say that its
        variables are gone.
        """
        idle = [
            (slot.last_used, sid)
            for sid, slot in self._slots.items()
            if sid != keep and slot.worker is not None and not slot.lock.locked()
        ]
        return self._slots[min(idle)[1]] if idle else None

    def pop_expired(self) -> list[SessionSlot]:
        deadline = time.monotonic() - self.idle_s
        expired = [sid for sid, slot in self._slots.items() if not slot.lock.locked() and slot.last_used < deadline]
        return [self._slots.pop(sid) for sid in expired]

    def pop(self, session_id: str) -> SessionSlot | None:
        return self._slots.pop(session_id, None)

    def pop_all(self) -> list[SessionSlot]:
        slots = list(self._slots.values())
        self._slots.clear()
        return slots
