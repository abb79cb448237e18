"""What one run of model-written code produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from agent_runtime.sandbox import output


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
    images: tuple[str, ...] = ()  # figures the code left open (matplotlib), base64 PNG

    @classmethod
    def from_reply(cls, reply: dict[str, Any], timeout: float, max_output_chars: int, *, sandboxed: bool) -> "ExecResult":
        """The result of a worker's reply, its output shaped for the model."""
        text, truncated = output.render(reply, timeout, max_output_chars)
        images = tuple(reply.get("images") or ())
        dropped = int(reply.get("images_dropped") or 0)
        if images or dropped:  # the model reads text only: it is told what the user was shown
            notes = [f"{len(images)} figure{'s' if len(images) != 1 else ''} shown to the user"] if images else []
            if dropped:
                notes.append(f"{dropped} figure{'s' if dropped > 1 else ''} too large to show (lower the dpi or size)")
            shown = f"[{'; '.join(notes)}]"
            text = f"{text.rstrip()}\n{shown}" if text.strip() else shown
        return cls(
            ok=bool(reply.get("ok")),
            output=text,
            seconds=float(reply.get("seconds", 0.0)),
            exit_code=reply.get("exit_code"),
            signal=reply.get("signal"),
            timed_out=bool(reply.get("timed_out")),
            memory_exceeded=bool(reply.get("memory_exceeded")),
            truncated=truncated,
            sandboxed=sandboxed,
            images=images,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
