"""Shaping a call's output for the model: bounded, middle dropped, with the ending kept intact.

The end is what matters most (a traceback's last line says what went wrong), so the tail's share
grows to hold the last few lines whole when they are long.
"""

from __future__ import annotations

import signal as signals
from typing import Any

OMISSION = "\n[… {n} characters omitted …]\n"
TAIL_LINES_KEPT = 3  # a traceback's last frame, its source line, and the exception

SIGNAL_MEANINGS = {
    signals.SIGSEGV: "segmentation fault",
    signals.SIGBUS: "bus error",
    signals.SIGFPE: "floating-point exception",
    signals.SIGILL: "illegal instruction",
    signals.SIGABRT: "aborted",
    signals.SIGKILL: "killed (a resource limit, or out of memory)",
    signals.SIGXCPU: "CPU time limit exceeded",
    signals.SIGXFSZ: "file size limit exceeded",
}


def shape_output(head: str, tail: str, omitted: int, limit: int) -> tuple[str, bool]:
    """``head`` + (``omitted`` characters) + ``tail`` cut to about ``limit`` characters.

    Returns the text and whether anything was dropped.
    """
    total = len(head) + omitted + len(tail)
    if total <= limit:
        return head + tail, False
    # With nothing omitted upstream, head and tail are one text; else two ends of a longer one.
    text_head, text_tail = (head, tail) if omitted else (head + tail, head + tail)
    marker_room = len(OMISSION.format(n=total))
    budget = max(0, limit - marker_room)
    last_lines = text_tail.rstrip("\n").rsplit("\n", TAIL_LINES_KEPT)[-TAIL_LINES_KEPT:]
    needed = sum(len(line) + 1 for line in last_lines) + (len(text_tail) - len(text_tail.rstrip("\n")))
    tail_keep = min(budget - budget // 8, max(budget // 2, needed))  # the head keeps at least an eighth
    head_keep = budget - tail_keep
    kept_tail = text_tail[len(text_tail) - tail_keep :] if tail_keep else ""
    kept_head = text_head[:head_keep]
    dropped = total - len(kept_head) - len(kept_tail)
    return kept_head + OMISSION.format(n=dropped) + kept_tail, True


def ending_note(reply: dict[str, Any], timeout_s: float, output_empty: bool) -> str:
    """A line saying how the call ended, when the output alone would not make it clear."""
    if reply.get("timed_out"):
        return f"[Timed out after {timeout_s:g} s; the process was killed.]"
    if reply.get("memory_exceeded"):
        return (
            f"[Killed: the code's processes together used more than {reply.get('call_memory_mb', '?')} MB of memory.]"
        )
    if reply.get("processes_exceeded"):
        return "[Killed: the code started more processes than allowed.]"
    number = reply.get("signal")
    if number:
        try:
            name = signals.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        meaning = SIGNAL_MEANINGS.get(number)
        return f"[Killed by {name}{': ' + meaning if meaning else ''}.]"
    code = reply.get("exit_code")
    if code not in (None, 0) and (code != 1 or output_empty):  # 1 with output: the traceback says it
        return f"[Exit status {code}.]"
    return ""


def render(reply: dict[str, Any], timeout_s: float, limit: int) -> tuple[str, bool]:
    """The text the model sees for a worker's reply, and whether it was truncated."""
    text, truncated = shape_output(
        str(reply.get("head", "")), str(reply.get("tail", "")), int(reply.get("omitted_bytes", 0)), limit
    )
    note = ending_note(reply, timeout_s, output_empty=not text.strip())
    if note:
        text = f"{text}{'' if not text or text.endswith(chr(10)) else chr(10)}{note}"
    return text, truncated
