"""Host uids for sandbox workers: one per live worker, reused only once no process of it is left."""

from __future__ import annotations

import pwd
import threading

from agent_runtime.sandbox import procs
from agent_runtime.sandbox.errors import SandboxError

DEFAULT_BASE_UID = 60000
DEFAULT_UID_COUNT = 1000


class UidAllocator:
    """Hands out uids from ``[base, base + count)``.

    Shared by every pool of this process (``ALLOCATOR``), and it skips uids that still own
    processes, so a second pool or a second server on the machine does not share a uid (the process
    limit counts per uid) — short of two allocations racing between processes. Uids of accounts in
    the password database are never used.
    """

    def __init__(self, base: int = DEFAULT_BASE_UID, count: int = DEFAULT_UID_COUNT) -> None:
        self.base, self.count = base, count
        self._used: set[int] = set()
        self._lock = threading.Lock()

    @property
    def range(self) -> range:
        return range(self.base, self.base + self.count)

    def acquire(self) -> int:
        with self._lock:
            busy = procs.processes_by_uid(self.range)
            for uid in self.range:
                if uid not in self._used and uid not in busy and not _is_assigned(uid):
                    self._used.add(uid)
                    return uid
        raise SandboxError(f"no free sandbox uid in {self.base}..{self.base + self.count - 1}")

    def release(self, uid: int) -> None:
        with self._lock:
            self._used.discard(uid)


def _is_assigned(uid: int) -> bool:
    """A uid of a real account: its files and processes would be within the code's reach."""
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


ALLOCATOR = UidAllocator()
