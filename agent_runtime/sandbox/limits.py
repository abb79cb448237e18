"""Resource bounds for model-written code, one place for every default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """What one call may use.

    ``timeout_s`` is wall-clock and enforced twice: by the worker (kills the call, keeps the warm
    worker) and by the host (kills and replaces the whole worker a little later). CPU time per call is
    bounded by RLIMIT_CPU at ``timeout_s`` rounded up, plus one second.
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024  # RLIMIT_AS of every sandboxed process (virtual memory)
    call_memory_mb: int = 2048  # resident anonymous memory of all of a call's processes together
    max_processes: int = 64  # RLIMIT_NPROC of the sandbox uid: processes and threads together
    max_file_mb: int = 32  # RLIMIT_FSIZE: largest file one process may write
    tmp_mb: int = 64  # size of the tmpfs on /tmp (and of the smaller one on /dev/shm, a quarter)
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_output_chars: int = 4000  # what the model sees, middle dropped past this
    worker_cpu_s: int = 3600  # RLIMIT_CPU ceiling of a worker's own lifetime; it is replaced past it

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if (
            min(
                self.memory_mb,
                self.call_memory_mb,
                self.max_processes,
                self.max_file_mb,
                self.tmp_mb,
                self.max_open_files,
            )
            <= 0
        ):
            raise ValueError("every limit must be positive")
        if self.max_output_chars < 200:
            raise ValueError("max_output_chars below 200 leaves no room for an error's last line")

    @property
    def capture_bytes(self) -> int:
        """How much of the head and of the tail of the output the worker keeps (each)."""
        return max(16_384, 4 * self.max_output_chars)
