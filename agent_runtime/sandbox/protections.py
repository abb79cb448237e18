"""Which of the sandbox's limits are in force on this machine: said once when a pool starts.

The pool decides at start-up (root or not, libseccomp or not, a writable cgroup v2 or not) and
keeps the answer as ``LimitsInForce``, which a server can report (``pool.limits_in_force``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("agent_runtime.sandbox")

RSS_POLL_S = 0.1  # how often a worker sums the resident memory of a call's processes


@dataclass(frozen=True)
class LimitsInForce:
    """The sandbox's limits as a pool applies them.

    ``uid_per_worker``: each worker runs as a host uid of its own (needs root), so RLIMIT_NPROC counts
    per worker; otherwise all workers share this process's uid and ``nproc_scope`` is ``"pool"``.
    ``cgroup_parent``: the cgroup v2 directory holding one cgroup per worker, with ``cgroup_pids_max``
    and ``cgroup_memory_max_bytes`` written into each (None: no per-worker cgroups, see ``missing``).
    ``rlimits``: prlimit's values on every sandboxed process. ``rss_poll_s``: the period of the worker's
    check of a call's resident memory (``call_memory_mb``), which is always on.
    ``missing``: one line per protection that is not in force here, and why.
    """

    uid_per_worker: bool
    seccomp_filter: bool
    cgroup_parent: str | None
    cgroup_pids_max: int | None
    cgroup_memory_max_bytes: int | None
    rlimits: dict[str, int]
    nproc_scope: str
    rss_poll_s: float
    call_memory_mb: int
    missing: tuple[str, ...] = field(default=())

    @property
    def cgroup_pids(self) -> bool:
        return self.cgroup_pids_max is not None

    @property
    def cgroup_memory(self) -> bool:
        return self.cgroup_memory_max_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["missing"] = list(self.missing)
        return data

    def summary(self) -> str:
        def yes(value: bool) -> str:
            return "yes" if value else "NO"

        cgroup = (
            f"pids.max={self.cgroup_pids_max} memory.max={self.cgroup_memory_max_bytes >> 20}MB in {self.cgroup_parent}"
            if self.cgroup_pids_max is not None and self.cgroup_memory_max_bytes is not None
            else "NO"
        )
        rlimits = " ".join(f"{name}={value}" for name, value in self.rlimits.items())
        return (
            f"uid per worker: {yes(self.uid_per_worker)}; seccomp filter: {yes(self.seccomp_filter)}; "
            f"cgroup per worker: {cgroup}; rlimits: {rlimits} "
            f"(nproc {'per worker' if self.nproc_scope == 'worker' else 'pool-wide'}); "
            f"RSS poll: every {self.rss_poll_s:g} s against {self.call_memory_mb} MB per call"
        )

    @property
    def isolation_weakened(self) -> bool:
        """Workers share a uid or run without the seccomp filter: worth a warning at every start.

        A missing per-worker cgroup is not: the RSS poll and the rlimits still bound each call, so it
        is reported at INFO (``tapo run`` and the tests stay quiet on such machines).
        """
        return not (self.uid_per_worker and self.seccomp_filter)

    def log(self) -> None:
        """One record naming what is in force and what is missing; WARNING when isolation is weakened."""
        extra = {"sandbox_limits": self.to_dict()}
        missing = f". Missing: {'; '.join(self.missing)}" if self.missing else ""
        level = logging.WARNING if self.isolation_weakened else logging.INFO
        log.log(level, "sandbox limits in force: %s%s", self.summary(), missing, extra=extra)
