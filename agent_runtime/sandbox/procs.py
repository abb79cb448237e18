"""Host-side view of sandbox processes by their host uid: find them, kill them, wait until gone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Collection


def real_uid_of(pid: int) -> int | None:
    """The real uid of ``pid`` (not /proc's owner, which is root for non-dumpable processes)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def processes_by_uid(uids: Collection[int]) -> dict[int, list[int]]:
    """uid → pids of its live or zombie processes, for the uids in ``uids`` that have any."""
    wanted = set(uids)
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            uid = real_uid_of(int(name))
            if uid in wanted:
                found.setdefault(uid, []).append(int(name))
    return found


def pids_of_uids(uids: Collection[int]) -> list[int]:
    """Every live or zombie process whose real uid is in ``uids``."""
    return [pid for pids in processes_by_uid(uids).values() for pid in pids]


def kill_uid_processes(uid: int, deadline_s: float = 3.0) -> bool:
    """SIGKILLs every process of ``uid`` until none is left (needs root); True if none is left.

    Used when a worker is retired: the kernel tears its PID namespace down once bwrap dies, but we
    only reuse a uid (whose process count the process limit uses) when that has really happened.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        pids = pids_of_uids([uid])
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
