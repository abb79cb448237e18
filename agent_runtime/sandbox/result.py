"""What one run of model-written code produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ExecResult:
    """``output`` is what the model sees: merged stdout+stderr, shaped, with a note on how it ended."""

    ok: bool
    output: str
    seconds: float
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    memory_exceeded: bool = False  # the call's processes together held more than call_memory_mb
    truncated: bool = False
    sandboxed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
